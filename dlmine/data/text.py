"""Text (`text`): a CSV with a text column and a label, or one folder of `.txt` files per class.

dlmine puts a `TextVectorization` layer first in the model, adapted on the training split
and saved inside the model, so the model takes raw strings; strings travel through
`tf.data`, so text needs the TensorFlow backend.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from dlmine.config.loading import Sources, valid_list
from dlmine.config.schema import Config, DatasetConfig
from dlmine.data import tabular
from dlmine.data.base import NEEDS_TWO, DataInfo, Source, class_folders
from dlmine.data.files import read_utf8
from dlmine.errors import ConfigError, DataError


class TextSource(Source):
    """Texts and their labels; the model's first layer turns strings into token ids."""

    kind = "text"
    shape_from_data = True
    strings = True

    def read(self) -> dict:
        return load_text(self.cfg)

    def loaded_info(self, arrays: dict, x_train) -> DataInfo:
        return DataInfo((1,), None, list(arrays["class_names"]), "text")

    def hash_into(self, digest, array) -> None:
        if array.dtype == object:
            array = np.array([hashlib.sha256(str(v).encode()).digest() for v in array])
        super().hash_into(digest, array)

    def input_layers(self, cfg: Config, src: Sources, input_shape: tuple, info: DataInfo):
        return text_input(cfg, src)

    def adapt(self, model, x_train) -> None:
        """Fit the vocabulary of the model's `TextVectorization` layer on the training texts."""
        layer = model.get_layer("text_vectorization")
        layer.adapt(np.asarray(x_train, dtype=object).reshape(-1))

    def feed(self, batches):
        """The same batches, in the same order, as a `tf.data` pipeline: Keras' PyDataset
        adapter cannot carry strings."""
        import tensorflow as tf

        first = batches[0]
        signature = tuple(tf.TensorSpec((None, *a.shape[1:]), _tf_dtype(a)) for a in first)
        dataset = tf.data.Dataset.from_generator(
            lambda: (batches[i] for i in range(len(batches))), output_signature=signature)
        return dataset.apply(tf.data.experimental.assert_cardinality(len(batches)))

    def as_input(self, x, y=None, batch_size: int = 32):
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices(x if y is None else (x, y)).batch(batch_size)

    def predict_batch_size(self, x, batch_size: int) -> None:
        return None  # batched by `as_input`

    def read_input(self, path: Path):
        """A `.txt` file (one text), a folder of `.txt` files (one text each) or a CSV with
        the text column."""
        if path.is_dir():
            texts = [read_utf8(p, "a .txt file") for p in sorted(path.glob("*.txt"))]
        elif path.suffix.lower() == ".csv":
            frame = tabular.read_table(path, "csv")
            column = self.cfg.text_column or "text"
            if column not in frame.columns:
                raise DataError(f"{path}: expected a column '{column}' holding the texts; "
                                f"received the columns {', '.join(frame.columns)}")
            texts = frame[column].fillna("").astype(str).tolist()
        else:
            texts = [read_utf8(path, "a .txt file")]
        if not texts:
            raise DataError(f"{path}: no texts (.txt files) to predict")
        return np.asarray(texts, dtype=str)


def _tf_dtype(array):
    import tensorflow as tf

    return tf.string if array.dtype.kind in "OUS" else tf.as_dtype(array.dtype)


def load_text(cfg: DatasetConfig) -> dict:
    """Texts from a CSV (`text_column`, `target`) or from class folders of `.txt` files."""
    out: dict = {}
    class_names: list[str] | None = None
    for split, raw in (("train", cfg.path), ("test", cfg.test_path)):
        if raw is None:
            continue
        path = Path(raw)
        if path.is_dir():
            texts, labels, names = _text_folder(path, class_names)
        else:
            texts, labels, names = _text_csv(path, cfg, class_names)
        class_names = class_names or names
        out[f"x_{split}"], out[f"y_{split}"] = texts, labels
    out["class_names"] = class_names
    return out


def _text_csv(path: Path, cfg: DatasetConfig, known: list | None):
    frame = tabular.read_table(path, "csv")
    target = cfg.target or "label"
    for column in (cfg.text_column, target):
        if column not in frame.columns:
            raise DataError(f"{path}: column '{column}' not found"
                            + valid_list(column, list(frame.columns), "Columns"))
    texts = frame[cfg.text_column].fillna("").astype(str).to_numpy(dtype=object)
    labels = [tabular.category(v) for v in frame[target]]
    if known is None and cfg.task == "classification" and len(set(labels)) == 1:
        raise DataError(f"{path}: the label column '{target}' holds one class only "
                        f"({labels[0]!r}); {NEEDS_TWO}")
    names = known or sorted(set(labels))
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise DataError(f"{path}: label '{unknown[0]}' is not a class of the training data "
                        f"({', '.join(names)})")
    return texts, np.array([names.index(v) for v in labels], dtype="int64"), names


def _text_folder(path: Path, known: list | None):
    names = class_folders(path, known, ".txt files")
    texts, labels = [], []
    for label, name in enumerate(names):
        for file in sorted((path / name).glob("*.txt")):
            try:
                texts.append(file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(f"{file}: cannot read it as UTF-8 text ({exc})") from None
            labels.append(label)
    if not texts:
        raise DataError(f"{path}: no .txt files in the class folders")
    return np.array(texts, dtype=object), np.array(labels, dtype="int64"), names


def text_input(cfg: Config, src: Sources):
    """A string input and the `TextVectorization` layer (adapted later, on the training split)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ConfigError([src.problem(("dataset", "name"), "text data needs the TensorFlow "
                                       f"backend (string tensors); KERAS_BACKEND is "
                                       f"{keras.backend.backend()}")])
    text = cfg.preprocessing.text
    inputs = keras.Input(shape=(1,), dtype="string", name="text")
    vectorize = keras.layers.TextVectorization(
        max_tokens=text.max_tokens, output_sequence_length=text.sequence_length,
        ngrams=text.ngrams, output_mode="int", name="text_vectorization")
    return inputs, vectorize(inputs)


def adapt_text(model, texts) -> None:
    """Fit the vocabulary of the model's `TextVectorization` layer on the training texts."""
    import numpy as np

    layer = model.get_layer("text_vectorization")
    layer.adapt(np.asarray(texts, dtype=object).reshape(-1))


