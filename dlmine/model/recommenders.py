"""Recommenders from `model.recommender`: MF, GMF, NCF and NeuMF over (user, item) codes.

Every model takes one input, `ids`, of shape (2,) int32: the user's and the item's
codes, each vocabulary with one extra slot for ids unseen in training. `rating` models
output the predicted rating (MF: dot product + user and item biases + the training
mean); `ranking` models output the probability of an interaction (a sigmoid), trained
on positives and sampled negatives. Only Keras layers and dlmine's registered `IdColumn`
and `GlobalBias` (`dlmine.model.layers`) are used, so the `.keras` loads in safe mode.
"""

from __future__ import annotations

import numpy as np

from dlmine.config.loading import Sources
from dlmine.config.schema import Config
from dlmine.model.checks import apply_layers

SCORE_BATCH = 1 << 16


def build_recommender(cfg: Config, src: Sources, info):
    """The Keras model of `model.recommender` on the vocabularies of `info`.

    Raises:
        ConfigError: a layer of `mlp` does not fit its input.
    """
    import keras

    from dlmine.model.layers import GlobalBias, IdColumn

    rec, task = cfg.model.recommender, cfg.dataset.task
    users = len(info.columns.get("users", [])) + 1 if info.columns else 2
    items = len(info.columns.get("items", [])) + 1 if info.columns else 2
    ids = keras.Input(shape=(2,), dtype="int32", name="ids")
    user, item = IdColumn(0, name="user_id")(ids), IdColumn(1, name="item_id")(ids)

    def embedding(name, rows, size):
        reg = keras.regularizers.L2(rec.l2) if rec.l2 else None
        init = "zeros" if size == 1 else keras.initializers.RandomNormal(stddev=0.05)
        # penalising the looked-up rows (Keras divides by the batch size) is the per-interaction
        # penalty of SGD matrix factorisation; a penalty on the whole table would shrink rare
        # ids' rows at every step
        layer = keras.layers.Embedding(rows, size, embeddings_initializer=init,
                                       activity_regularizer=reg, name=name)
        return keras.layers.Flatten(name=f"{name}_flat")(layer(user if "user" in name else item))

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
             embedding("item_mlp_embedding", items, size)])
        parts.append(_mlp(cfg, src, x))
    activation = "sigmoid" if task == "ranking" else None
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


def _mlp(cfg: Config, src: Sources, x):
    return apply_layers(x, [(("model", "recommender", "mlp", i), item)
                            for i, item in enumerate(cfg.model.recommender.mlp)], src)


def factors(model) -> tuple[np.ndarray, np.ndarray] | None:
    """(user vectors, item vectors) whose dot products are the model's scores before its
    final activation (MF, GMF); None for models that are not factorised (NCF, NeuMF)."""
    names = {layer.name for layer in model.layers}
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


def score_users(model, users: np.ndarray, num_items: int) -> np.ndarray:
    """Scores `(len(users), num_items)` of every item of the vocabulary for each user: one
    matrix product for factorised models, else the model on every pair."""
    vectors = factors(model)
    if vectors is not None:
        return vectors[0][users] @ vectors[1][:num_items].T
    pairs = np.stack([np.repeat(users, num_items), np.tile(np.arange(num_items), len(users))],
                     axis=1).astype("int32")
    scores = model.predict(pairs, batch_size=SCORE_BATCH, verbose=0)
    return np.asarray(scores).reshape(len(users), num_items)
