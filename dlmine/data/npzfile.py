"""One reader of `.npz` files, with its checks: never pickled objects, the arrays it needs.

Every `.npz` dlmine reads (a dataset, a shard, a `predict` input) goes through here, with
`allow_pickle=False`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from dlmine.data.files import check_regular_file
from dlmine.errors import DataError

PICKLED = ("{path}: holds Python objects (pickled arrays), which dlmine does not load; save "
           "plain numeric arrays")
INPUT_ARRAYS = ("x", "x_test", "x_train")  # the first one present in a predict input


def read_npz(path: Path) -> dict:
    check_regular_file(path, "an .npz file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a readable .npz file (File is not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(PICKLED.format(path=path) + f" ({exc})") from None
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    check_npz_keys(path, arrays)
    return arrays


def check_npz_keys(path: Path, arrays: dict) -> None:
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if ("x_test" in arrays) != ("y_test" in arrays):
        missing.append("y_test" if "x_test" in arrays else "x_test")
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)}; expected x_train, "
                        f"y_train and optionally x_test, y_test; found {', '.join(arrays) or 'none'}")
    for x, y in (("x_train", "y_train"), ("x_test", "y_test")):
        if x in arrays and len(arrays[x]) != len(arrays[y]):
            raise DataError(f"{path}: {x} has {len(arrays[x])} samples but {y} has "
                            f"{len(arrays[y])}; expected one label per sample")
        if x in arrays and not np.issubdtype(arrays[x].dtype, np.number):
            raise DataError(f"{path}: {x} has dtype {arrays[x].dtype}; expected numbers")
    for key in ("x_train", "x_test"):
        if key in arrays and len(arrays[key]) == 0:
            raise DataError(f"{path}: {key} is empty")


def npz_headers(path: Path) -> dict:
    """`{array name: (shape, dtype)}` of an .npz, from the headers alone."""
    try:
        out = {}
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if not name.endswith(".npy"):
                    continue
                with archive.open(name) as member:
                    version = np.lib.format.read_magic(member)
                    reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = reader(member)
                out[name[:-4]] = (tuple(shape), dtype)
        return out
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None


def read_input_array(path: Path) -> np.ndarray:
    """The samples of a `predict` input: an `.npz` (its first array of `INPUT_ARRAYS`) or an
    `.npy` file."""
    check_regular_file(path, "an .npz or .npy file")
    if path.suffix.lower() == ".npy":
        with open(path, "rb") as head:
            if head.read(6) != b"\x93NUMPY":  # without it, np.load would try to unpickle
                raise DataError(f"{path}: not a readable .npy file (no NumPy header: it does "
                                "not start with the bytes \\x93NUMPY of np.save)")
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(_unreadable(path, exc)) from None
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a readable .npz file (File is not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            key = next((k for k in INPUT_ARRAYS if k in npz.files), None)
            if key is None:
                raise DataError(f"{path}: expected an array named {', '.join(INPUT_ARRAYS[:-1])} "
                                f"or {INPUT_ARRAYS[-1]}; found: {', '.join(npz.files) or 'none'}")
            return npz[key]
    except ValueError as exc:
        raise DataError(_unreadable(path, exc)) from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None


def _unreadable(path: Path, exc: Exception) -> str:
    if "allow_pickle" in str(exc):
        return (f"{path}: holds Python objects (pickled arrays), which dlmine does not load; "
                "expected plain numeric arrays")
    return f"{path}: not a readable numpy file ({exc})"
