"""A denoising autoencoder of each user's history: `model.recommender.type: dae` (ranking).

Each user is the row of the items they interacted with in training (1, else 0), held in
the model as a frozen lookup by user code (`user_history`). The scored item is left out of
its own row (a training positive must not read its label) and the row is divided by the
square root of what is left (`HistoryRow`; with `recency`, each item weighs less the more
of the user's interactions are newer); the `encoder` layers (a `Dropout` first makes
the denoising) turn it into the user's vector (`user_vector`). An item's score is the dot
product of that vector with the item's learned vector plus the item's bias: Wu et al.'s
CDAE (2016) without its per-user input node, trained like every ranking model here, on
positives and sampled negatives. An item the user never interacted with is not in the row,
so the user's vector is the same for every candidate and top K over the catalogue is one
matrix product (`dlmine.model.recommenders.factors`).
"""

from __future__ import annotations

import numpy as np

from dlmine.config.loading import Sources
from dlmine.config.schema import Config
from dlmine.errors import ConfigError
from dlmine.model.autorec import MAX_VALUES, refuse_oversized
from dlmine.model.checks import apply_layers, shape_text


def build_dae(cfg: Config, src: Sources, info, train: tuple | None, ids, user, item,
              activation: str | None):
    """The model on `train` (the training split's positive codes; None: no history, for
    shapes only); `activation` is the score's (a sigmoid for the pointwise loss).

    Raises:
        ConfigError: an `encoder` layer does not fit, or the encoder does not end with one
            vector per user.
        DataError: users x items is over `MAX_VALUES`.
    """
    import keras

    from dlmine.model.layers import HistoryRow

    rec, columns = cfg.model.recommender, info.columns or {}
    users, items = len(columns.get("users", [])) + 1, len(columns.get("items", [])) + 1
    table = history_table(cfg, users, items, train, info.tables.get("newer"))
    lookup = keras.layers.Embedding(users, items, trainable=False, name="user_history")
    row = keras.layers.Flatten(name="user_history_flat")(lookup(user))
    lookup.set_weights([table])
    x = HistoryRow(name="history_row")([row, item])
    x = apply_layers(x, [(("model", "recommender", "encoder", i), layer)
                         for i, layer in enumerate(rec.encoder)], src)
    if len(x.shape) != 2:
        raise ConfigError([src.problem(("model", "recommender", "encoder"), "the encoder must "
                                       "end with one vector per user, received shape "
                                       f"{shape_text(x.shape)}")])
    vector = keras.layers.Identity(name="user_vector")(x)
    init = keras.initializers.RandomNormal(stddev=0.05)
    reg = keras.regularizers.L2(rec.l2) if rec.l2 else None  # per looked-up row, as in MF
    embedded = keras.layers.Flatten(name="item_embedding_flat")(keras.layers.Embedding(
        items, vector.shape[-1], embeddings_initializer=init, activity_regularizer=reg,
        name="item_embedding")(item))
    bias = keras.layers.Flatten(name="item_bias_flat")(keras.layers.Embedding(
        items, 1, embeddings_initializer="zeros", activity_regularizer=reg,
        name="item_bias")(item))
    score = keras.layers.Add(name="biased")([keras.layers.Dot(axes=1, name="dot")(
        [vector, embedded]), bias])
    if activation:
        score = keras.layers.Activation(activation, name="probability")(score)
    return keras.Model(ids, score, name=cfg.name.replace(".", "_"))


def history_table(cfg: Config, users: int, items: int, train: tuple | None,
                  newer: np.ndarray | None = None) -> np.ndarray:
    """`(users, items)` float32: at each training positive's (user, item) codes 1, or with
    `recency` 0.5 ** (newer / recency) (`newer`: how many of the user's training positives
    are newer, row by row of `train`); else 0."""
    refuse_oversized(cfg, "every user's history", (users, "users"), (items, "items"),
                     "type: mf, neumf or two_tower", MAX_VALUES)
    table = np.zeros((users, items), "float32")
    if train is not None:
        codes, half = train[0], cfg.model.recommender.recency
        weight = 1.0 if half is None or newer is None else 0.5 ** (newer / half)
        table[codes[:, 0], codes[:, 1]] = weight
    return table
