"""Data from the user's own files: tables, text (a CSV or class folders), image folders.

Each loader returns the arrays `datasets.load` splits: `x_train`, `y_train`
(integer labels, or numbers for regression), optionally `x_test`, `y_test`, and
`class_names`. Tables stay DataFrames until the encoder fitted on the training
split turns them into numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlmine.config.schema import DatasetConfig
from dlmine.data import tabular
from dlmine.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


def load_table(cfg: DatasetConfig) -> dict:
    """A table and its optional test table -> frames of the feature columns and the targets."""
    train = tabular.read_table(Path(cfg.path), cfg.name)
    kinds = tabular.feature_columns(train, Path(cfg.path), cfg.target, cfg.columns,
                                    cfg.categorical_encoding)
    frames = {"train": (Path(cfg.path), train)}
    if cfg.test_path:
        test = tabular.read_table(Path(cfg.test_path), cfg.name)
        tabular.feature_columns(test, Path(cfg.test_path), cfg.target, kinds)
        frames["test"] = (Path(cfg.test_path), test)
    out: dict = {"columns": kinds}
    targets = []
    for split, (path, frame) in frames.items():
        frame = tabular.check_values(frame, path, {**kinds, cfg.target: "target"}, cfg.missing)
        if frame[cfg.target].isna().any():
            row = int(np.argmax(frame[cfg.target].isna().to_numpy()))
            raise DataError(f"{path}: column '{cfg.target}', row {row + 2}: the target is missing")
        out[f"x_{split}"] = frame[list(kinds)].reset_index(drop=True)
        targets.append((split, path, frame[cfg.target]))
    out.update(_targets(targets, cfg))
    return out


def _targets(targets: list, cfg: DatasetConfig) -> dict:
    import pandas as pd

    out: dict = {}
    if cfg.task == "regression":
        for split, path, series in targets:
            numbers = pd.to_numeric(series, errors="coerce")
            if numbers.isna().any():
                row = int(np.argmax(numbers.isna().to_numpy()))
                raise DataError(f"{path}: column '{cfg.target}', row {row + 2}: "
                                f"{series.iloc[row]!r} is not a number (dataset.task is regression)")
            out[f"y_{split}"] = numbers.to_numpy("float32")
        return out
    names = sorted({tabular._category(v) for _, _, s in targets for v in s},
                   key=lambda v: (not _is_number(v), float(v) if _is_number(v) else 0.0, v))
    index = {name: i for i, name in enumerate(names)}
    for split, _, series in targets:
        out[f"y_{split}"] = np.array([index[tabular._category(v)] for v in series], dtype="int64")
    out["class_names"] = names
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
            from dlmine.config.loading import valid_list

            raise DataError(f"{path}: column '{column}' not found"
                            + valid_list(column, list(frame.columns), "Columns"))
    texts = frame[cfg.text_column].fillna("").astype(str).to_numpy(dtype=object)
    labels = [tabular._category(v) for v in frame[target]]
    names = known or sorted(set(labels))
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise DataError(f"{path}: label '{unknown[0]}' is not a class of the training data "
                        f"({', '.join(names)})")
    return texts, np.array([names.index(v) for v in labels], dtype="int64"), names


def _class_folders(path: Path, known: list | None, kind: str) -> list[str]:
    names = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < 2 and known is None:
        raise DataError(f"{path}: expected one sub-folder of {kind} per class (at least 2), "
                        f"found {len(names)}")
    if known is not None and set(names) - set(known):
        extra = sorted(set(names) - set(known))[0]
        raise DataError(f"{path}: class folder '{extra}' is not a class of the training data "
                        f"({', '.join(known)})")
    return known or names


def _text_folder(path: Path, known: list | None):
    names = _class_folders(path, known, ".txt files")
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


def load_images(cfg: DatasetConfig) -> dict:
    """Images from class folders, resized to `image_size`, as uint8-range float arrays."""
    out: dict = {}
    names = None
    for split, raw in (("train", cfg.path), ("test", cfg.test_path)):
        if raw is None:
            continue
        x, y, names = _image_folder(Path(raw), cfg, names)
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    out["class_names"] = names
    return out


def _image_folder(path: Path, cfg: DatasetConfig, known: list | None):
    if not path.is_dir():
        raise DataError(f"image folder not found: {path}")
    names = _class_folders(path, known, "images")
    files, labels = [], []
    for label, name in enumerate(names):
        found = [f for f in sorted((path / name).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class "
                        "folders")
    return read_images(files, cfg.image_size, cfg.color_mode), np.array(labels, dtype="int64"), names


def read_images(paths: list[Path], size: list[int], color_mode: str) -> np.ndarray:
    """Images resized to `size` ([height, width]) in `color_mode`, as float32 arrays 0..255."""
    from PIL import Image, UnidentifiedImageError

    height, width = size
    mode = "RGB" if color_mode == "rgb" else "L"
    images = []
    for file in paths:
        try:
            with Image.open(file) as image:
                array = np.asarray(image.convert(mode).resize((width, height)), dtype="float32")
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"{file}: not a readable image ({exc})") from None
        images.append(array.reshape(height, width, -1))
    return np.stack(images)


def image_info(cfg: DatasetConfig) -> tuple[tuple, list[str]]:
    """The sample shape and classes of an image folder, without reading any image."""
    path = Path(cfg.path)
    if not path.is_dir():
        raise DataError(f"image folder not found: {path}")
    names = _class_folders(path, None, "images")
    channels = 3 if cfg.color_mode == "rgb" else 1
    return (*cfg.image_size, channels), names
