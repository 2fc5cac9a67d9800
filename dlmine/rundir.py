"""The run directory: its layout, atomic writes, the `run.json` lifecycle and its lock.

Every file is written to a temporary name in the same folder, flushed, fsynced
and renamed over the old one, so a reader (or a `kill -9`) never sees half a
file. A run directory is created once and never overwritten.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from dlmine.config import Config, load_config
from dlmine.config.keys import diff
from dlmine.errors import DlmineError, UsageError

CONFIG = "config.yaml"
RUN_JSON = "run.json"
HISTORY = "history.csv"
EVAL_JSON = "eval.json"
MODEL = "model.keras"
LOG = "train.log"
LOCK = ".lock"
STATE = "training_state.json"  # the commit marker of the last complete epoch
CHECKPOINTS = "checkpoints"
STATUSES = ("running", "completed", "failed", "interrupted")
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK  # what open() would give; mkstemp's 0600 would hide runs from others


@contextmanager
def staged(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside `path` for the block to write; then fsynced and renamed over
    `path`, so that `path` holds either the old or the new bytes, never half.

    Raises:
        DlmineError: the file cannot be written (a full disk, an unwritable folder); the
            temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        try:
            os.fchmod(fd, _FILE_MODE)
        finally:
            os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        _remove_quietly(tmp)
        raise DlmineError(f"cannot write {path}: {exc.strerror or exc}; the previous version "
                          "of the file, if any, is intact") from None
    except BaseException:
        _remove_quietly(tmp)
        raise


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` through `staged`: the old bytes or the new, never half."""
    with staged(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def atomic_save_model(model, path: Path, copies: tuple = ()) -> None:
    """`model.save` through `staged` (a `.keras` temporary, as Keras wants the suffix).

    Args:
        copies: other paths that get the same model (`best.keras` beside `last.keras`): one
            serialisation instead of one per file; each copy is its own file, written through
            `atomic_copy` (fsynced, renamed into place) before `path` is.
    """
    with staged(path, suffix=".keras") as tmp:
        model.save(tmp)
        for copy in copies:
            atomic_copy(tmp, copy)


def atomic_copy(source: Path, path: Path) -> None:
    """Copy the file `source` to `path` through `staged`: the old bytes or the new, never half."""
    with staged(path, suffix=Path(path).suffix or ".tmp") as tmp:
        shutil.copyfile(source, tmp)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path) -> None:
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass


def now_iso() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


class RunDir:
    """One run's folder. `create` makes a new one; `open` reads an existing one."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @classmethod
    def create(cls, path: Path | None, runs_root: Path, name: str) -> RunDir:
        """Create a fresh run directory; never reuse or overwrite one.

        Args:
            path: `--run-dir`, or None for `runs_root/<name>-<YYYYmmdd-HHMMSS>`.
            runs_root: where default run directories go.
            name: the config's name (already checked to be a plain name).

        Raises:
            UsageError: `path` already exists.
        """
        if path is not None:
            path = Path(path)
            refuse_existing(path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.mkdir()
            except FileExistsError:
                if path.exists():
                    raise UsageError(f"run directory {path} already exists") from None
                raise DlmineError(f"cannot create run directory {path}: a file stands where a "
                                  "folder above it should be") from None
            except OSError as exc:
                raise DlmineError(f"cannot create run directory {path}: "
                                  f"{exc.strerror or exc}") from None
        else:
            path = fresh_folder(Path(runs_root), name)
        (path / CHECKPOINTS).mkdir()
        return cls(path)

    @contextmanager
    def removed_on_failure(self) -> Iterator[None]:
        """For the block that writes a new run's first files: a failure there (a full disk)
        removes the whole folder, so that no run directory without `run.json` is left."""
        try:
            yield
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """An existing run directory, checked to be one.

        Raises:
            UsageError: the folder is missing or holds no `config.yaml`.
        """
        path = Path(path)
        if not path.is_dir():
            raise UsageError(f"run directory not found: {path}")
        links = [p for p in [path / CHECKPOINTS, *path.iterdir(), *_files(path / CHECKPOINTS)]
                 if p.is_symlink()]
        if links:
            raise UsageError(f"{links[0]} is a symbolic link; dlmine neither reads nor writes "
                             "through links inside a run directory")
        if (path / "study.json").is_file() and not (path / RUN_JSON).exists():
            raise UsageError(f"{path} is a tune study directory, not one run; use one of its "
                             f"trials ({path}/trial-NNNN), or train its best.yaml")
        if not (path / CONFIG).is_file():
            raise UsageError(f"{path} is not a dlmine run directory: it has no {CONFIG}")
        return cls(path)

    def read_config(self) -> Config:
        """The run's resolved `config.yaml`, as `load_config` reads it (no model checks: the
        run was checked when it trained, and may be read on another backend)."""
        return load_config(self.path / CONFIG).config

    def write(self, name: str, data: bytes | str) -> None:
        atomic_write(self.path / name, data)

    def write_json(self, name: str, obj: Any) -> None:
        """Write `obj` as JSON; a NaN or infinite number (an undefined metric, such as R² of
        one sample) is written as null, which JSON readers take, never as `NaN`."""
        self.write(name, json_text(finite_or_null(obj), self.path / name))

    def read_json(self, name: str) -> dict:
        try:
            data = json.loads((self.path / name).read_text())
        except FileNotFoundError:
            raise DlmineError(f"{self.path / name} is missing") from None
        except (ValueError, OSError) as exc:
            raise DlmineError(f"{self.path / name} is damaged: {exc}") from None
        if not isinstance(data, dict):
            raise DlmineError(f"{self.path / name} is damaged: it holds "
                              f"{type(data).__name__ if data is not None else 'null'}, not an "
                              "object")
        return data

    def config_edits(self, info: dict) -> list[str] | None:
        """What changed in `config.yaml` since training (`seed: 1 -> 2`), or None when its
        sha256 is the `config_sha256` of `info` (or `info` records none)."""
        recorded = info.get("config_sha256")
        try:
            text = (self.path / CONFIG).read_bytes()
        except OSError as exc:
            raise DlmineError(f"cannot read {self.path / CONFIG}: {exc.strerror or exc}") from None
        if recorded is None or hashlib.sha256(text).hexdigest() == recorded:
            return None
        trained = info.get("config")
        now = read_config_mapping(self.path / CONFIG)
        if now is None:  # not plain YAML, or not a mapping: the loader says where and why
            load_config(self.path / CONFIG)
        if not isinstance(trained, dict) or now is None:
            return []
        return diff(trained, now)

    def check_config(self, warn=None) -> None:
        """Refuse a `config.yaml` edited after training: what it rebuilds would not be the
        run's data, split or model.

        Args:
            warn: called with a message when `run.json` cannot be read (nothing to check
                against); without it, that error is raised.

        Raises:
            ConfigEdited: the file's sha256 differs from `config_sha256` in `run.json`.
        """
        try:
            info = self.read_json(RUN_JSON)
        except DlmineError as exc:
            if warn is None:
                raise
            warn(f"{exc}; {CONFIG} cannot be checked against its config_sha256")
            return
        edits = self.config_edits(info)
        if edits is not None:
            raise ConfigEdited(self.path, edits)

    def fold_parent(self) -> Path | None:
        """The cross-validation this run is a fold of (`PARENT/fold-K`), or None."""
        parent = self.path.parent
        if not re.fullmatch(r"fold-\d+", self.path.name):
            return None
        try:
            return parent if RunDir(parent).read_json(RUN_JSON).get("folds") else None
        except DlmineError:  # no run.json there, or a damaged one
            return None

    def refuse_folds(self, verb: str) -> None:
        """Refuse to treat the parent of a k-fold cross-validation as one run."""
        try:
            folds = self.read_json(RUN_JSON).get("folds")
        except DlmineError:
            return
        if folds:
            raise UsageError(f"{self.path} holds a {folds}-fold cross-validation, not one model; "
                             f"{verb} one of its folds: {self.path}/fold-1 ... "
                             f"{self.path}/fold-{folds}")

    def update_run(self, drop: tuple[str, ...] = (), **fields: Any) -> dict:
        """Merge `fields` into `run.json`, less the keys in `drop`, and write it atomically."""
        current = self.read_json(RUN_JSON) if (self.path / RUN_JSON).exists() else {}
        current.update(fields)
        for key in drop:
            current.pop(key, None)
        self.write_json(RUN_JSON, current)
        return current

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold `.lock` (`PID HOST`) while training; a lock whose process is dead is taken
        over. A lock of another host is never taken over: its process cannot be seen here.

        Re-entrant: a process that already holds the lock keeps it (and the outer holder
        releases it).

        Raises:
            UsageError: another live process holds the lock.
            DlmineError: the lock cannot be written (a read-only run directory).
        """
        lock = self.path / LOCK
        me = (os.getpid(), socket.gethostname())
        if _lock_owner(lock) == me:
            yield
            return
        mine = self.path / f".lock.{os.getpid()}"
        try:
            mine.write_text(f"{me[0]} {me[1]}\n")  # the owner is in the file before it is the lock
            self._link_lock(mine, lock)
        except OSError as exc:
            raise DlmineError(f"cannot take the lock {lock}: {exc.strerror or exc}") from None
        finally:
            _remove_quietly(mine)
        try:
            yield
        finally:
            _remove_quietly(lock)

    def _link_lock(self, mine: Path, lock: Path) -> None:
        for _ in range(2):
            try:
                os.link(mine, lock)
                return
            except FileExistsError:
                owner = _lock_owner(lock)
                if owner and _alive(*owner):
                    pid, host = owner
                    raise UsageError(f"{self.path} is in use by another dlmine process (pid "
                                     f"{pid} on {host}); wait for it, or stop it") from None
                _remove_quietly(lock)
        raise UsageError(f"cannot take the lock {lock}")


class ConfigEdited(UsageError):
    """A run's `config.yaml` no longer is the config it was trained with."""

    def __init__(self, path: Path, edits: list[str]):
        self.edits = edits
        lines = "".join(f"\n  {edit}" for edit in edits)
        super().__init__(f"{path / CONFIG} was edited after the run was trained (its sha256 "
                         f"differs from config_sha256 in {RUN_JSON}):{lines}\nrestore the "
                         "file, or train a new run with the changed config")


def refuse_existing(path: Path) -> None:
    """Refuse a `--run-dir` that exists (checked before any data is loaded, and again when
    the folder is made).

    Raises:
        UsageError: `path` exists, even as an empty folder or a symbolic link.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise UsageError(f"run directory {path} already exists; dlmine never "
                         "overwrites a run. Choose another --run-dir")


def read_history(path: Path) -> list[dict]:
    """The rows of a run's `history.csv`: `epoch` an integer, every metric a float (NaN for an
    empty cell); [] when the file does not exist.

    Raises:
        DlmineError: the file cannot be read or is damaged, naming its line.
    """
    path = Path(path)
    rows: list[dict] = []
    try:
        text = path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):  # dlmine ends every row: the file was cut
            raise DlmineError(f"{path} is damaged at line {text.count(chr(10)) + 1} (the line "
                              "is cut short); expected one row of numbers per epoch, as dlmine "
                              "writes it")
        reader = csv.DictReader(text.splitlines())
        if text and "epoch" not in (reader.fieldnames or []):
            raise DlmineError(f"{path} is damaged (no 'epoch' column)")
        for row in reader:
            rows.append({k: _history_value(k, v) for k, v in row.items()})
    except FileNotFoundError:
        return []
    except (ValueError, TypeError, csv.Error, UnicodeDecodeError) as exc:
        raise DlmineError(f"{path} is damaged at line {len(rows) + 2} ({exc}); expected one "
                          "row of numbers per epoch, as dlmine writes it") from None
    except OSError as exc:
        raise DlmineError(f"cannot read {path}: {exc.strerror or exc}") from None
    return rows


def _history_value(key: str | None, text: str | None):
    if key is None or text is None:
        raise ValueError("a row with more or fewer cells than the header")
    if key == "epoch":
        return int(text)
    return float(text) if text != "" else math.nan


def read_config_mapping(path: Path) -> dict | None:
    """The mapping of a run's `config.yaml` as written (`yaml.safe_load`), for listings that
    must not stop at one damaged run; None when it is missing or not a mapping."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def fresh_folder(root: Path, prefix: str) -> Path:
    """Create and return `root/<prefix>-<YYYYmmdd-HHMMSS>[-N]`, a folder no one had before."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DlmineError(f"cannot create the runs root {root}: "
                          f"{exc.strerror or 'a file stands in the way'}") from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        candidate = root / (f"{prefix}-{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            raise DlmineError(f"cannot create {candidate}: {exc.strerror or exc}") from None
    raise DlmineError(f"cannot find a free folder name under {root}")


def _files(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() and not folder.is_symlink() else []


def _lock_owner(lock: Path) -> tuple[int, str] | None:
    """(pid, host) of a lock; a lock of an older dlmine holds the pid alone (this host)."""
    try:
        pid, _, host = lock.read_text().strip().partition(" ")
        return (int(pid), host or socket.gethostname()) if int(pid or 0) else None
    except (OSError, ValueError):
        return None


def _alive(pid: int, host: str) -> bool:
    if host != socket.gethostname():
        return True  # another machine's process: it cannot be seen from here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def json_text(obj: Any, path: Path) -> str:
    """`obj` as indented JSON for the file `path`: never `NaN` or `Infinity`, which are not JSON.

    Raises:
        DlmineError: `obj` holds a NaN or an infinity (named by its key), rather than a file
            that JSON readers refuse.
    """
    try:
        return json.dumps(obj, indent=2, default=_jsonable, allow_nan=False) + "\n"
    except ValueError:
        key, value = _non_finite(json.loads(json.dumps(obj, default=_jsonable)))
        raise DlmineError(f"cannot write {path}: {key} is {value}, which JSON cannot hold") from None


def finite_or_null(obj: Any) -> Any:
    """`obj` with every NaN or infinite float (numpy's too) replaced by None."""
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_null(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, str):
        return finite_or_null(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _non_finite(obj: Any, key: str = "") -> tuple[str, float]:
    """(dotted key, value) of the first NaN or infinity in `obj`."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for name, value in items:
        inner = f"{key}[{name}]" if isinstance(obj, list) else f"{key}.{name}" if key else str(name)
        if isinstance(value, float) and not math.isfinite(value):
            return inner, value
        if isinstance(value, dict | list):
            found = _non_finite(value, inner)
            if found[0]:
                return found
    return "", 0.0


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
