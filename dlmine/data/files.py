"""Checks that every kind of data shares: a data path is a regular file, text is UTF-8, numbers
are finite and fit in float32.

Each check names the file and where in it (array index, line and column) the problem is.
"""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np

from dlmine.errors import DataError

FLOAT32_MAX = float(np.finfo("float32").max)
NOT_REGULAR = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO",
               stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
               stat.S_ISSOCK: "a socket"}
CHUNK = 1 << 22  # values checked at a time: the mask of a huge array never sits in memory whole


def check_regular_file(path: Path, expected: str) -> None:
    """Refuse a path that is missing or not a regular file (a FIFO would block the reader).

    Args:
        expected: what the file should be, e.g. `a CSV file`.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in NOT_REGULAR.items() if test(mode)), "an unknown kind of file")
        raise DataError(f"{path}: not a regular file ({kind}); expected {expected}")


def utf8_error(path: Path) -> tuple[int, int, int, str]:
    """(line, column, byte, the line's text before the byte) of the first byte of `path` that
    is not UTF-8; lines and columns count from 1, columns in characters.

    Read a line at a time: a newline byte never occurs inside a UTF-8 sequence, so each line
    decodes on its own exactly as it would within the file.
    """
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                before = raw[: exc.start].decode("utf-8")
                return number, len(before) + 1, raw[exc.start], before
    raise ValueError(f"{path} is valid UTF-8")


def check_finite(x: np.ndarray, name: str, path: Path | str) -> None:
    """Refuse NaN, infinities and (for float64) values beyond float32 range in `x`, naming the
    first one: `FILE: x_train[3, 2, 1] is nan; expected finite numbers`."""
    if x.dtype.kind != "f" or x.size == 0:
        return  # integers and booleans are always finite
    flat = x.reshape(-1)
    wide = x.dtype.itemsize > 4
    for start in range(0, flat.size, CHUNK):
        part = flat[start:start + CHUNK]
        bad = ~np.isfinite(part)
        if wide:
            bad |= np.abs(part) > FLOAT32_MAX
        if bad.any():
            at = start + int(np.argmax(bad))
            index = ", ".join(map(str, np.unravel_index(at, x.shape)))
            value = float(flat[at])
            what = (f"{value!r}, beyond the range of 32-bit floats" if np.isfinite(value)
                    else repr(value))
            raise DataError(f"{path}: {name}[{index}] is {what}; expected finite numbers")
