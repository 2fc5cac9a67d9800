"""dlmine's own Keras layer, registered so that saved models load with `safe_mode=True`.

`ColumnEmbedding` stands first in a table model whose categorical columns are
embedded: the table encoder gives one float vector per row, the one-hot and numeric
part first, then one integer code per embedded column; the layer passes the first
part through and turns each code into that column's learned embedding.
Import this module before loading a model (`dlmine.results.evaluate.load_model_file` does).
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="dlmine")
class ColumnEmbedding(keras.layers.Layer):
    """[dense features | one code per embedded column] -> [dense features | embeddings].

    Args:
        dense_width: how many leading values pass through unchanged.
        input_dims: per embedded column, its number of codes (the unseen-value slot too).
        output_dims: per embedded column, the size of its embedding.
        columns: the embedded columns' names, for the weights' names and the summary.
    """

    def __init__(self, dense_width: int, input_dims: list[int], output_dims: list[int],
                 columns: list[str] | None = None, **kwargs):
        super().__init__(**kwargs)
        if len(input_dims) != len(output_dims) or not input_dims or (
                columns is not None and len(columns) != len(input_dims)):
            raise ValueError("input_dims, output_dims and columns must be non-empty lists of "
                             "equal length")
        self.dense_width = int(dense_width)
        self.input_dims = [int(d) for d in input_dims]
        self.output_dims = [int(d) for d in output_dims]
        self.columns = list(columns or [f"column_{i}" for i in range(len(input_dims))])
        self.embeddings = [keras.layers.Embedding(i, o, name=f"embedding_{_safe(c)}",
                                                  dtype=self.dtype_policy)
                           for i, o, c in zip(self.input_dims, self.output_dims, self.columns,
                                              strict=True)]

    def build(self, input_shape):
        expected = self.dense_width + len(self.input_dims)
        if input_shape[-1] is not None and input_shape[-1] != expected:
            raise ValueError(f"ColumnEmbedding expects {expected} input values per sample "
                             f"({self.dense_width} dense + {len(self.input_dims)} codes), "
                             f"received {input_shape[-1]}")
        for layer in self.embeddings:
            layer.build((None,))

    def call(self, inputs):
        parts = [inputs[:, :self.dense_width]] if self.dense_width else []
        for k, layer in enumerate(self.embeddings):
            code = ops.cast(ops.round(inputs[:, self.dense_width + k]), "int32")
            code = ops.clip(code, 0, self.input_dims[k] - 1)  # out-of-range codes: unseen slot
            parts.append(ops.cast(layer(code), inputs.dtype))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dense_width + sum(self.output_dims))

    def get_config(self):
        return {**super().get_config(), "dense_width": self.dense_width,
                "input_dims": self.input_dims, "output_dims": self.output_dims,
                "columns": self.columns}


def default_embedding_dim(codes: int) -> int:
    """fast.ai's rule of thumb: min(50, round(1.6 * codes ** 0.56))."""
    return max(1, min(50, round(1.6 * codes ** 0.56)))


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in str(name))[:40] or "column"


@keras.saving.register_keras_serializable(package="dlmine")
class IdColumn(keras.layers.Layer):
    """One column of a recommender's `ids` input: `(batch, 2)` codes -> `(batch, 1)` int32.

    Args:
        index: 0 for the user's code, 1 for the item's.
    """

    def __init__(self, index: int, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, inputs):
        return ops.cast(inputs[:, self.index:self.index + 1], "int32")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "index": self.index}


@keras.saving.register_keras_serializable(package="dlmine")
class GlobalBias(keras.layers.Layer):
    """Adds one learned number, starting at `initial` (a recommender's mean rating).

    Args:
        initial: the starting value, e.g. the training ratings' mean.
    """

    def __init__(self, initial: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.initial = float(initial)

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(1,), name="bias",
                                    initializer=keras.initializers.Constant(self.initial))

    def call(self, inputs):
        return inputs + ops.cast(self.bias, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "initial": self.initial}


@keras.saving.register_keras_serializable(package="dlmine")
class HistoryRow(keras.layers.Layer):
    """A user's history row without the item being scored, divided by the square root of
    what is left: `(row (batch, items), item code (batch, 1))` -> `(batch, items)`.

    Leaving the scored item out keeps a training positive from reading its own label; the
    square root keeps a heavy user's row as loud as a light user's.
    """

    def call(self, inputs):
        row, item = inputs
        row = row * (1.0 - ops.one_hot(ops.reshape(item, (-1,)), ops.shape(row)[-1],
                                        dtype=row.dtype))
        return row / ops.sqrt(ops.maximum(ops.sum(row, axis=-1, keepdims=True), 1.0))

    def compute_output_shape(self, input_shape):
        return input_shape[0]


LIST_LOSSES = {"pairwise": "PairwiseLogisticLoss", "pairwise_hinge": "PairwiseHingeLoss",
               "listwise": "ListMLELoss"}  # `model.recommender.loss` -> keras_rs.losses


@keras.saving.register_keras_serializable(package="dlmine")
class ListRankingLoss(keras.losses.Loss):
    """A keras-rs ranking loss over lists laid out as consecutive rows of a batch.

    A recommender scores one (user, item) pair per row; for a list loss each batch holds
    `list_size` consecutive rows per list (a positive, then its sampled negatives), so the
    scores and labels are reshaped to `(lists, list_size)` before keras-rs sees them.
    Labels below 0 (a negative that could not be drawn) are ignored, as keras-rs does.

    Args:
        method: a key of `LIST_LOSSES`.
        list_size: rows per list.
    """

    def __init__(self, method: str = "pairwise", list_size: int = 2, **kwargs):
        kwargs.setdefault("name", f"{method}_loss")
        super().__init__(**kwargs)
        if method not in LIST_LOSSES:
            raise ValueError(f"method must be one of {sorted(LIST_LOSSES)}, received {method!r}")
        import keras_rs

        self.method, self.list_size = method, int(list_size)
        self.inner = getattr(keras_rs.losses, LIST_LOSSES[method])(reduction=None)

    def call(self, y_true, y_pred):
        labels = ops.reshape(ops.cast(y_true, y_pred.dtype), (-1, self.list_size))
        scores = ops.reshape(y_pred, (-1, self.list_size))
        return self.inner(labels, scores)

    def get_config(self):
        return {**super().get_config(), "method": self.method, "list_size": self.list_size}
