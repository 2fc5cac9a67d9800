"""I-AutoRec (Sedhain et al., 2015) over (user, item) codes: `model.recommender.type: autorec`.

Each item is the vector of its training ratings, one value per user (0 where the user did
not rate it), held in the model as a frozen lookup by item code (`item_ratings`). The
`encoder` layers turn that vector into the item's code (`item_vector`); the rating of
(user, item) is the dot product of the code with the user's learned vector (the
decoder's row of that user, `user_embedding`), plus the user's bias and the global mean.
That is AutoRec's decoder read at one user, so batches of (user, item) rows train
AutoRec's objective: the squared error of the training ratings plus lambda / 2 times the
squared weights (the `encoder` kernels and the users' vectors). The model still takes
`ids` and outputs one rating, like every recommender, and top K over the catalogue is
one matrix product of the users' vectors and the items' codes
(`dlmine.model.recommenders.factors`).
"""

from __future__ import annotations

import numpy as np

from dlmine.config.loading import Sources
from dlmine.config.schema import Config
from dlmine.errors import ConfigError, DataError
from dlmine.model.checks import apply_layers, shape_text

# items x users ratings held in the model: 2^28 float32 values are 1 GiB
MAX_VALUES = 1 << 28


def build_autorec(cfg: Config, src: Sources, info, train: tuple | None, ids, user, item):
    """The AutoRec model on `train` (the training split's codes and ratings; None: a table
    of zeros, for shapes only).

    Raises:
        ConfigError: an `encoder` layer does not fit, or the encoder does not end with one
            vector per item.
        DataError: items x users is over `MAX_VALUES`.
    """
    import keras

    from dlmine.model.layers import GlobalBias

    rec, columns = cfg.model.recommender, info.columns or {}
    users, items = len(columns.get("users", [])) + 1, len(columns.get("items", [])) + 1
    table = rating_table(cfg, users, items, train)
    ratings = len(train[1]) if train is not None else 1
    reg = keras.regularizers.L2(rec.l2 / (2 * max(ratings, 1))) if rec.l2 else None

    def penalised(layer):  # AutoRec's lambda on every encoder kernel the config leaves bare
        if reg is not None and getattr(layer, "kernel_regularizer", False) is None:
            layer.kernel_regularizer = reg

    lookup = keras.layers.Embedding(items, users, trainable=False, name="item_ratings")
    x = keras.layers.Flatten(name="item_ratings_flat")(lookup(item))
    lookup.set_weights([table])
    x = apply_layers(x, [(("model", "recommender", "encoder", i), layer)
                         for i, layer in enumerate(rec.encoder)], src, before=penalised)
    if len(x.shape) != 2:
        raise ConfigError([src.problem(("model", "recommender", "encoder"), "the encoder must "
                                       "end with one vector per item, received shape "
                                       f"{shape_text(x.shape)}")])
    code = keras.layers.Identity(name="item_vector")(x)
    decoder = keras.layers.Embedding(users, code.shape[-1], embeddings_regularizer=reg,
                                     name="user_embedding")
    vector = keras.layers.Flatten(name="user_embedding_flat")(decoder(user))
    weights = decoder.get_weights()[0]
    weights[-1] = 0.0  # the slot of users never seen in training: they get the global mean
    decoder.set_weights([weights])
    bias = keras.layers.Flatten(name="user_bias_flat")(keras.layers.Embedding(
        users, 1, embeddings_initializer="zeros", name="user_bias")(user))
    score = keras.layers.Add(name="biased")([keras.layers.Dot(axes=1, name="dot")(
        [code, vector]), bias])
    score = GlobalBias(columns.get("rating_mean", 0.0), name="global_mean")(score)
    return keras.Model(ids, score, name=cfg.name.replace(".", "_"))


def rating_table(cfg: Config, users: int, items: int, train: tuple | None) -> np.ndarray:
    """`(items, users)` float32: each training rating at its (item, user) codes, else 0."""
    refuse_oversized(cfg, "every item's ratings by every user", (items, "items"),
                     (users, "users"), "type: mf or two_tower", MAX_VALUES)
    table = np.zeros((items, users), "float32")
    if train is not None:
        codes, ratings = train
        table[codes[:, 1], codes[:, 0]] = ratings
    return table


def refuse_oversized(cfg: Config, holds: str, rows: tuple[int, str], columns: tuple[int, str],
                     instead: str, limit: int) -> None:
    """Refuse a table held in the model (`rows` x `columns` codes, each count with its slot
    for unseen ids) of more than `limit` values, naming what it holds and what to use instead.

    Raises:
        DataError: the table is over `limit`.
    """
    (n, row_name), (m, column_name) = rows, columns
    if n * m > limit:
        raise DataError(f"{cfg.dataset.path}: type: {cfg.model.recommender.type} holds {holds} "
                        f"in the model, {n - 1} {row_name} x {m - 1} {column_name} = "
                        f"{(n - 1) * (m - 1):,} values (4 bytes each), over its limit of "
                        f"{limit:,}; use {instead}, whose memory follows the embeddings")
