"""Image folders (`images`): one sub-folder of images per class, resized to `image_size`."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from pathlib import Path

import numpy as np

from dlmine.config.schema import DatasetConfig
from dlmine.data.arrays import ArraySource
from dlmine.data.base import DataInfo, class_folders, json_type
from dlmine.data.files import check_regular_file
from dlmine.errors import DataError, UsageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


class ImageSource(ArraySource):
    """Images as float arrays 0..255 of `(height, width, channels)`."""

    def header_info(self) -> DataInfo:
        shape, names = image_info(self.cfg)
        return DataInfo(shape, len(names), names)

    def read(self) -> dict:
        return load_images(self.cfg)

    def read_input(self, path: Path) -> np.ndarray:
        """One image file, or a folder of images, resized as in training."""
        files = self.input_files(path)
        paths = [path] if files is None else files
        if not path.is_dir():
            check_regular_file(path, "an image file or a folder of images")
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise UsageError(f"{path}: cannot read '{path.suffix or path.name}' files; expected "
                                 f"an image file ({', '.join(sorted(IMAGE_SUFFIXES))}) or a "
                                 "folder of images")
        if not paths:
            folders = sorted(p.name for p in path.iterdir() if p.is_dir()
                             and not p.name.startswith("."))
            inside = (f"; it holds only the sub-folders {', '.join(folders[:8])}"
                      f"{', ...' if len(folders) > 8 else ''}, and predict reads the images "
                      "directly in the folder given: give one of them" if folders else "")
            raise DataError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}){inside}")
        return read_images(paths, self.cfg.image_size, self.cfg.color_mode)

    def input_files(self, path: Path) -> list[Path] | None:
        if not path.is_dir():
            return None
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    def check_json(self, values: list, prep, field: str, warn=None) -> np.ndarray:
        """One image file per sample, base64-encoded, resized as in training."""
        names = [f"{field}[{i}]" for i in range(len(values))]
        x = read_images(decode_base64(values, field), self.cfg.image_size, self.cfg.color_mode,
                        names)
        return self.check_input(x, prep, field, warn)

    def input_schema(self, prep) -> dict:
        height, width = self.cfg.image_size
        return {"kind": "images", "image_size": [height, width], "color_mode": self.cfg.color_mode,
                "sample_shape": list(prep.sample_shape),
                "send": f"one image file ({', '.join(sorted(IMAGE_SUFFIXES))}) per sample, "
                        f"base64-encoded; resized to {height}x{width} as in training"}


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


def image_folder(path: Path) -> None:
    """Refuse a missing path as every data path is refused, and a file where the class
    folders should be."""
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if not path.is_dir():
        raise DataError(f"{path}: not a folder; expected a folder with one sub-folder of images "
                        "per class")


def _image_folder(path: Path, cfg: DatasetConfig, known: list | None):
    image_folder(path)
    names = class_folders(path, known, "images")
    files, labels = [], []
    for label, name in enumerate(names):
        found = [f for f in sorted((path / name).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class "
                        "folders")
    return read_images(files, cfg.image_size, cfg.color_mode), np.array(labels, dtype="int64"), names


def read_images(paths: list, size: list[int], color_mode: str, names: list | None = None) -> np.ndarray:
    """Images (paths, or file objects named by `names`) resized to `size` ([height, width])
    in `color_mode`, as float32 arrays 0..255."""
    from PIL import Image, UnidentifiedImageError

    height, width = size
    mode = "RGB" if color_mode == "rgb" else "L"
    images = []
    for i, file in enumerate(paths):
        try:
            with warnings.catch_warnings():  # PIL's warnings (large or palette images) are its own
                warnings.simplefilter("ignore")
                with Image.open(file) as image:
                    array = np.asarray(image.convert(mode).resize((width, height)),
                                       dtype="float32")
        except Image.DecompressionBombError as exc:
            raise DataError(f"{file if names is None else names[i]}: not a readable image: "
                            f"{exc}") from None
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"{file if names is None else names[i]}: not a readable image "
                            f"({exc})") from None
        images.append(array.reshape(height, width, -1))
    return np.stack(images)


def decode_base64(values: list, field: str) -> list[io.BytesIO]:
    """Base64 strings (the bytes of image files) as file objects, or a `DataError` naming
    the first that is not one."""
    files = []
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise DataError(f"{field}[{i}]: expected an image file as a base64 string; received "
                            f"{json_type(value)}")
        try:
            files.append(io.BytesIO(base64.b64decode(value, validate=True)))
        except binascii.Error as exc:
            raise DataError(f"{field}[{i}]: not base64 ({exc}); expected an image file as a "
                            "base64 string") from None
    return files


def image_info(cfg: DatasetConfig) -> tuple[tuple, list[str]]:
    """The sample shape and classes of an image folder, without reading any image."""
    path = Path(cfg.path)
    image_folder(path)
    names = class_folders(path, None, "images")
    channels = 3 if cfg.color_mode == "rgb" else 1
    return (*cfg.image_size, channels), names
