"""Recommenders from `model.recommender`: MF, GMF, NCF, NeuMF, two-tower, AutoRec
(`dlmine.model.autorec`) and the history autoencoder (`dlmine.model.dae`) over (user, item)
codes.

Every model takes one input, `ids`, of shape (2,) int32: the user's and the item's
codes, each vocabulary with one extra slot for ids unseen in training. `rating` models
output the predicted rating (MF: dot product + user and item biases + the training
mean); `ranking` models output the probability of an interaction (a sigmoid), trained
on positives and sampled negatives. Only Keras layers and dlmine's registered `IdColumn`
and `GlobalBias` (`dlmine.model.layers`) are used, so the `.keras` loads in safe mode.
"""

from __future__ import annotations

import numpy as np

from dlmine.config.checks import list_size
from dlmine.config.loading import Sources
from dlmine.config.schema import Config
from dlmine.errors import ConfigError
from dlmine.model.autorec import build_autorec
from dlmine.model.checks import apply_layers, shape_text
from dlmine.model.dae import build_dae

SCORE_BATCH = 1 << 16  # (user, item) pairs per predict batch
ROW_VALUES = 1 << 24  # values of held rows per predict batch (autorec, dae): 64 MiB each


def build_recommender(cfg: Config, src: Sources, info, train: tuple | None = None):
    """The Keras model of `model.recommender` on the vocabularies of `info` (and, for
    `autorec`, the ratings of `train`, the training split's codes and ratings).

    Raises:
        ConfigError: a layer of `mlp` or of a tower does not fit its input, or the towers'
            widths differ.
    """
    import keras

    from dlmine.model.layers import GlobalBias, IdColumn

    rec, task = cfg.model.recommender, cfg.dataset.task
    users = len(info.columns.get("users", [])) + 1 if info.columns else 2
    items = len(info.columns.get("items", [])) + 1 if info.columns else 2
    ids = keras.Input(shape=(2,), dtype="int32", name="ids")
    user, item = IdColumn(0, name="user_id")(ids), IdColumn(1, name="item_id")(ids)
    codes = {"user": user, "item": item}
    if rec.type == "autorec":
        return build_autorec(cfg, src, info, train, ids, user, item)

    def embedding(name, rows, size):
        reg = keras.regularizers.L2(rec.l2) if rec.l2 else None
        init = "zeros" if size == 1 else keras.initializers.RandomNormal(stddev=0.05)
        # penalising the looked-up rows (Keras divides by the batch size) is the per-interaction
        # penalty of SGD matrix factorisation; a penalty on the whole table would shrink rare
        # ids' rows at every step
        layer = keras.layers.Embedding(rows, size, embeddings_initializer=init,
                                       activity_regularizer=reg, name=name)
        return keras.layers.Flatten(name=f"{name}_flat")(layer(user if "user" in name else item))

    side = {name: _side_features(cfg, info, name, codes[name]) for name in ("user", "item")}
    sides = [v for v in (side["user"], side["item"]) if v is not None]
    # a pointwise loss scores a probability; a list loss (keras-rs) compares raw scores
    activation = "sigmoid" if task == "ranking" and rec.loss == "pointwise" else None
    if rec.type == "dae":
        return build_dae(cfg, src, info, train, ids, user, item, activation)
    if rec.type == "two_tower":
        return _two_tower(cfg, src, info, ids, embedding(
            "user_embedding", users, rec.factors), embedding(
            "item_embedding", items, rec.factors), side, activation)
    parts = []
    if rec.type == "mf":
        parts.append(keras.layers.Dot(axes=1, name="dot")(
            [embedding("user_embedding", users, rec.factors),
             embedding("item_embedding", items, rec.factors)]))
    if rec.type in ("gmf", "neumf"):
        product = keras.layers.Multiply(name="gmf_product")(
            [embedding("user_embedding", users, rec.factors),
             embedding("item_embedding", items, rec.factors)])
        parts.append(product)
    if rec.type in ("ncf", "neumf"):
        size = rec.mlp_factors or rec.factors
        x = keras.layers.Concatenate(name="mlp_input")(
            [embedding("user_mlp_embedding", users, size),
             embedding("item_mlp_embedding", items, size), *sides])
        parts.append(_mlp(cfg, src, x))
    if rec.type == "mf":
        terms = [parts[0], embedding("user_bias", users, 1), embedding("item_bias", items, 1)]
        score = keras.layers.Add(name="biased")(terms)
        mean = info.columns.get("rating_mean", 0.0) if task == "rating" and info.columns else 0.0
        score = GlobalBias(mean, name="global_mean")(score)
        if activation:
            score = keras.layers.Activation(activation, name="probability")(score)
    else:
        joined = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="neumf")(parts)
        score = keras.layers.Dense(1, activation=activation, name="score")(joined)
        if task == "rating":
            score = GlobalBias(info.columns.get("rating_mean", 0.0) if info.columns else 0.0,
                               name="global_mean")(score)
    return keras.Model(ids, score, name=cfg.name.replace(".", "_"))


def _side_features(cfg: Config, info, side: str, codes):
    """The side features of each row's user or item, looked up by its code in a frozen
    table (`info.tables`, `dlmine.data.side_tables`); None without `{side}_features`.
    Without the data (`check` before loading), a zero table of one column per feature."""
    import keras

    if not getattr(cfg.dataset.interactions, f"{side}_features"):
        return None
    table = info.tables.get(side)
    meta = (info.columns or {}).get(f"{side}_features")
    if table is None:
        rows = len((info.columns or {}).get(f"{side}s", [])) + 1
        table = np.zeros((max(rows, 2), len(getattr(cfg.dataset.interactions,
                                                    f"{side}_features"))), "float32")
        meta = None
    lookup = keras.layers.Embedding(len(table), table.shape[1], trainable=False,
                                    name=f"{side}_features")
    x = keras.layers.Flatten(name=f"{side}_features_flat")(lookup(codes))
    lookup.set_weights([table])
    if meta and meta["layout"]["embedded"]:
        from dlmine.model.layers import ColumnEmbedding

        layout = meta["layout"]
        dim = cfg.dataset.interactions.embedding_dim
        x = ColumnEmbedding(layout["dense"], [e["codes"] for e in layout["embedded"]],
                            [dim] * len(layout["embedded"]),
                            [e["column"] for e in layout["embedded"]],
                            name=f"{side}_feature_embedding", dtype="float32")(x)
    return x


def _two_tower(cfg: Config, src: Sources, info, ids, user, item, side: dict, activation):
    """A user tower and an item tower of layers, scored by the dot product of their outputs;
    `user_vector` and `item_vector` name the outputs, so the catalogue's vectors are one
    pass of the item tower and top K one matrix product (`factors`)."""
    import keras

    from dlmine.model.layers import GlobalBias

    rec, vectors = cfg.model.recommender, {}
    for name, embedded in (("user", user), ("item", item)):
        x = embedded if side[name] is None else keras.layers.Concatenate(
            name=f"{name}_tower_input")([embedded, side[name]])
        key = f"{name}_tower"
        x = apply_layers(x, [(("model", "recommender", key, i), layer)
                             for i, layer in enumerate(getattr(rec, key))], src)
        vectors[name] = keras.layers.Identity(name=f"{name}_vector")(x)
    widths = {name: v.shape[-1] for name, v in vectors.items()}
    if len(widths) == 2 and widths["user"] != widths["item"]:
        last = len(rec.item_tower) - 1
        raise ConfigError([src.problem(("model", "recommender", "item_tower", last),
                                       f"the item tower ends with {widths['item']} values but "
                                       f"the user tower with {widths['user']}; their dot "
                                       "product needs the same width")])
    if len(vectors["user"].shape) != 2:
        raise ConfigError([src.problem(("model", "recommender", "user_tower"), "a tower must "
                                       "end with one vector per row, received shape "
                                       f"{shape_text(vectors['user'].shape)}")])
    score = keras.layers.Dot(axes=1, name="dot")([vectors["user"], vectors["item"]])
    if cfg.dataset.task == "rating":
        score = GlobalBias(info.columns.get("rating_mean", 0.0) if info.columns else 0.0,
                           name="global_mean")(score)
    if activation:
        score = keras.layers.Activation(activation, name="probability")(score)
    return keras.Model(ids, score, name=cfg.name.replace(".", "_"))


def _mlp(cfg: Config, src: Sources, x):
    return apply_layers(x, [(("model", "recommender", "mlp", i), item)
                            for i, item in enumerate(cfg.model.recommender.mlp)], src)


def factors(model) -> tuple[np.ndarray, np.ndarray] | None:
    """(user vectors, item vectors) whose dot products are the model's scores before its
    final activation (MF, GMF, two-tower); None for models that are not factorised (NCF,
    NeuMF)."""
    names = {layer.name for layer in model.layers}
    if "item_ratings" in names:
        return _autorec_vectors(model)
    if "user_history" in names:
        return _history_vectors(model)
    if "user_vector" in names:
        return _tower_vectors(model, names)
    if "user_embedding" not in names or "user_mlp_embedding" in names:
        return None
    users = model.get_layer("user_embedding").get_weights()[0]
    items = model.get_layer("item_embedding").get_weights()[0]
    if "score" in names:  # GMF: w . (p * q) + b = (w * p) . q + b
        kernel, bias = model.get_layer("score").get_weights()
        users = users * kernel[:, 0]
        ones = np.ones((len(users), 1), users.dtype)
        return (np.hstack([users, ones]),
                np.hstack([items, np.full((len(items), 1), bias[0], items.dtype)]))
    user_bias = model.get_layer("user_bias").get_weights()[0]
    item_bias = model.get_layer("item_bias").get_weights()[0]
    mean = float(model.get_layer("global_mean").get_weights()[0][0])
    ones_u, ones_i = np.ones_like(user_bias), np.ones_like(item_bias)
    return (np.hstack([users, user_bias + mean, ones_u]), np.hstack([items, ones_i, item_bias]))


def _tower_vectors(model, names: set) -> tuple[np.ndarray, np.ndarray]:
    """Every user's and every item's tower output (one pass of each tower), with the global
    mean of a rating model as one more column."""
    users, items = (_each_code(model, f"{side}_vector", column,
                               model.get_layer(f"{side}_embedding").input_dim)
                    for side, column in (("user", 0), ("item", 1)))
    if "global_mean" in names:
        mean = float(model.get_layer("global_mean").get_weights()[0][0])
        users = np.hstack([users, np.ones((len(users), 1), users.dtype)])
        items = np.hstack([items, np.full((len(items), 1), mean, items.dtype)])
    return users, items


def _autorec_vectors(model) -> tuple[np.ndarray, np.ndarray]:
    """An AutoRec model's (user vectors, item vectors): each user's decoder row with its
    bias plus the global mean, each item's code (one pass of the encoder) with a 1."""
    codes = _each_code(model, "item_vector", 1, model.get_layer("item_ratings").input_dim)
    users = model.get_layer("user_embedding").get_weights()[0]
    bias = model.get_layer("user_bias").get_weights()[0]
    mean = float(model.get_layer("global_mean").get_weights()[0][0])
    return (np.hstack([users, bias + mean]),
            np.hstack([codes, np.ones((len(codes), 1), codes.dtype)]))


def _history_vectors(model) -> tuple[np.ndarray, np.ndarray]:
    """A history autoencoder's (user vectors, item vectors): each user's encoded history
    with a 1, each item's vector with its bias. The users' pass scores the slot of unseen
    items, which no history holds, so every history is read whole."""
    history = model.get_layer("user_history")
    users = _each_code(model, "user_vector", 0, history.input_dim, other=history.output_dim - 1)
    items = model.get_layer("item_embedding").get_weights()[0]
    bias = model.get_layer("item_bias").get_weights()[0]
    return np.hstack([users, np.ones((len(users), 1), users.dtype)]), np.hstack([items, bias])


def _each_code(model, output: str, column: int, rows: int, other: int = 0) -> np.ndarray:
    """The output of layer `output` for every code 0..rows-1 in `ids` column `column` (the
    other column `other`): a tower or an encoder run once over every user or item."""
    import keras

    ids = np.full((rows, 2), other, "int32")
    ids[:, column] = np.arange(rows)
    part = keras.Model(model.inputs, model.get_layer(output).output)
    return np.asarray(part.predict(ids, batch_size=score_batch(model), verbose=0))


def score_batch(model) -> int:
    """Pairs per predict batch: `SCORE_BATCH`, or fewer for a model that reads a held row
    of the catalogue per pair (AutoRec's item ratings, a `dae` user's history), so that a
    batch of those rows holds at most `ROW_VALUES` values."""
    width = max((layer.output_dim for layer in model.layers
                 if layer.name in ("item_ratings", "user_history")), default=0)
    return SCORE_BATCH if not width else max(1, min(SCORE_BATCH, ROW_VALUES // width))


def list_loss(cfg: Config):
    """The keras-rs list loss of `model.recommender.loss` (`dlmine.model.layers`), or None
    for a pointwise loss."""
    from dlmine.model.layers import ListRankingLoss

    size = list_size(cfg)
    return ListRankingLoss(cfg.model.recommender.loss, size) if size > 1 else None


class Scorer:
    """Scores of every item for blocks of users; a factorised model's vectors are computed
    once (`factors`), so each block is one matrix product."""

    def __init__(self, model, num_items: int):
        self.model, self.num_items = model, num_items
        self.vectors = factors(model)

    def __call__(self, users: np.ndarray) -> np.ndarray:
        """`(len(users), num_items)` scores."""
        if self.vectors is not None:
            return self.vectors[0][users] @ self.vectors[1][:self.num_items].T
        pairs = np.stack([np.repeat(users, self.num_items),
                          np.tile(np.arange(self.num_items), len(users))],
                         axis=1).astype("int32")
        scores = self.model.predict(pairs, batch_size=score_batch(self.model), verbose=0)
        return np.asarray(scores).reshape(len(users), self.num_items)


def item_vectors(model) -> np.ndarray:
    """The learned vectors of every item: a two-tower model's item tower outputs, else its
    embeddings (GMF's and MLP's side by side); an AutoRec model's item codes."""
    if any(layer.name == "item_ratings" for layer in model.layers):
        return _autorec_vectors(model)[1][:, :-1]
    if any(layer.name == "item_vector" for layer in model.layers):
        return _tower_vectors(model, set())[1]
    names = [n for n in ("item_embedding", "item_mlp_embedding")
             if any(layer.name == n for layer in model.layers)]
    return np.hstack([model.get_layer(n).get_weights()[0] for n in names])
