"""`dlmine runs` and `dlmine compare`: every run under a folder, and runs side by side.

Both read only `run.json` and `config.yaml` (plain YAML, no Keras), so they answer at
once, and a damaged `run.json` makes its row say `damaged` instead of failing the listing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dlmine.config.keys import flatten
from dlmine.console import number
from dlmine.errors import DlmineError, UsageError
from dlmine.results.report_html import dataset_label, duration, parse_config, timestamp
from dlmine.rundir import CHECKPOINTS, CONFIG, RUN_JSON, STATE, ConfigEdited, RunDir

DAMAGED = "damaged"  # the status shown for a run.json that cannot be read
SORT_KEYS = ("started", "name", "duration", "accuracy", "loss")
RUNS_HEADER = ["run", "status", "dataset", "epochs", "best (monitor)", "test accuracy", "test loss",
               "duration", "started"]
ABSENT = "-"


def find_runs(root: Path) -> list[Path]:
    """Every run directory under `root`, itself included: a folder with `run.json`, or with
    `config.yaml` and `checkpoints/` (a run whose `run.json` was lost).

    Raises:
        UsageError: `root` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"runs folder not found: {root} (expected a folder of run directories, "
                         "such as runs/)")
    found = []
    for folder, subfolders, files in os.walk(root):
        if RUN_JSON in files or (CONFIG in files and CHECKPOINTS in subfolders):
            found.append(Path(folder))
            subfolders.clear()  # a run's checkpoints/, report/, export/ hold no runs
        else:
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
    return found


def run_row(path: Path, root: Path) -> dict:
    """One run as a flat dict: `run` (path under root), `status`, dataset, epochs, metrics, times.

    A `run.json` that cannot be read gives `status: damaged` and empty figures.
    """
    row = {"run": _relative(path, root), "path": str(path), "dataset": ABSENT, "epochs": None}
    config = _read_yaml(path / CONFIG)
    if config is not None:
        row["dataset"] = dataset_label(config)
        row["epochs"] = (config.get("training") or {}).get("epochs")
    try:
        info = json.loads((path / RUN_JSON).read_text(encoding="utf-8"))
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError, UnicodeDecodeError):
        return {**row, "name": path.name, "status": DAMAGED, "epochs_completed": None, "best": None,
                "test_accuracy": None, "test_loss": None, "duration_s": None, "started": None}
    metrics = info.get("final_metrics") or {}
    if not _well_typed(info, metrics):  # valid JSON, but not what dlmine writes there
        return {**row, "name": path.name, "status": DAMAGED, "epochs_completed": None, "best": None,
                "test_accuracy": None, "test_loss": None, "duration_s": None, "started": None}
    status = info.get("status") if (path / CONFIG).is_file() else DAMAGED
    return {**row, "name": info.get("name") or path.name, "status": status,
            "epochs_completed": _epochs_completed(path, info), "best": info.get("best"),
            "test_accuracy": metrics.get("accuracy"), "test_loss": metrics.get("loss"),
            "duration_s": info.get("duration_s"), "started": info.get("started")}


def _well_typed(info: dict, metrics) -> bool:
    """The fields a row shows have the types dlmine writes (or are absent)."""
    numeric = (int, float)
    kinds = {"status": str, "name": str, "started": str, "duration_s": numeric,
             "epochs_completed": int, "best": dict}
    if not isinstance(metrics, dict):
        return False
    fields = [(info.get(key), kind) for key, kind in kinds.items()]
    fields += [(metrics.get(key), numeric) for key in ("accuracy", "loss")]
    if isinstance(info.get("best"), dict):
        fields += [(info["best"].get("value"), numeric), (info["best"].get("monitor"), str),
                   (info["best"].get("epoch"), int)]
    return all(value is None or (isinstance(value, kind) and not isinstance(value, bool))
               for value, kind in fields)


def _epochs_completed(path: Path, info: dict):
    """`run.json`'s count, or the last epoch committed in `training_state.json` when that is
    newer (a run still training, or killed: run.json counts at the end)."""
    counted = info.get("epochs_completed")
    try:
        committed = json.loads((path / STATE).read_text(encoding="utf-8")).get("epoch")
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return counted
    if isinstance(committed, int) and (not isinstance(counted, int) or committed > counted):
        return committed
    return counted


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) if path != root else path.name
    except ValueError:
        return str(path)


def _read_yaml(path: Path) -> dict | None:
    try:
        return parse_config(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def list_runs(root: Path, status: str | None = None, sort: str = "started") -> list[dict]:
    """The rows of every run under `root`, filtered by `status` and sorted.

    Args:
        root: the folder to search.
        status: keep only runs with this status (`completed`, ..., or `damaged`).
        sort: `started` (oldest first), `name`, `duration` (shortest first), `accuracy`
            (highest first) or `loss` (lowest first); runs without the value come last.

    Returns:
        The rows, as `run_row` makes them.
    """
    if sort not in SORT_KEYS:
        raise UsageError(f"--sort {sort}: expected one of {', '.join(SORT_KEYS)}")
    rows = [run_row(path, Path(root)) for path in find_runs(root)]
    if status is not None:
        rows = [row for row in rows if row["status"] == status]
    field, sign = {"started": ("started", 1), "name": ("run", 1), "duration": ("duration_s", 1),
                   "accuracy": ("test_accuracy", -1), "loss": ("test_loss", 1)}[sort]

    def key(row):
        value = _timestamp(row["started"]) if field == "started" else row.get(field)
        if isinstance(value, str):
            return (0, 0, value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return (0, sign * value, row["run"])
        return (1, 0, row["run"])  # unknown values last

    return sorted(rows, key=key)


def _timestamp(text) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


def table_rows(rows: list[dict]) -> list[list[str]]:
    """Rows of text for the table of `dlmine runs`."""
    out = []
    for row in rows:
        best = row.get("best") or {}
        best_text = (f"{best.get('monitor')} {_num(best.get('value'))} (epoch {best.get('epoch')})"
                     if best.get("value") is not None else ABSENT)
        configured = "?" if row["epochs"] is None else row["epochs"]
        epochs = ABSENT if row["epochs_completed"] is None else f"{row['epochs_completed']}/{configured}"
        started = timestamp(row["started"])[:16]
        out.append([row["run"], str(row["status"]), row["dataset"], epochs, best_text,
                    _num(row["test_accuracy"]), _num(row["test_loss"]), duration(row["duration_s"]),
                    started])
    return out


def _num(value) -> str:
    return ABSENT if not isinstance(value, int | float) else number(float(value))


def compare_runs(paths: list[Path]) -> dict:
    """The config keys that differ between runs, and their metrics side by side.

    Args:
        paths: two or more run directories.

    Returns:
        `{"runs": [...], "config": {dotted key: [value per run]}, "metrics": {key: [...]}}`;
        a key a run lacks has the value None.

    Raises:
        UsageError: fewer than two runs, or a path that is not a run directory.
        ConfigEdited: a `config.yaml` edited after its run trained.
        DlmineError: a `config.yaml` or `run.json` that cannot be read.
    """


    if len(paths) < 2:
        raise UsageError(f"compare needs at least two run directories; received {len(paths)}")
    runs = [RunDir.open(p) for p in paths]
    infos = [run.read_json(RUN_JSON) for run in runs]
    for run, info in zip(runs, infos, strict=True):  # a hand-edited config.yaml is not the run's
        if (edits := run.config_edits(info)) is not None:
            raise ConfigEdited(run.path, edits)
    configs = [flatten(_config_of(run.path)) for run in runs]
    metrics = [_metrics_of(info) for info in infos]
    by_kind = sorted(_side_by_side(metrics, only_different=False).items(),
                     key=lambda item: not item[0].startswith("test "))  # test metrics first
    return {"runs": [str(p) for p in paths], "config": _side_by_side(configs, only_different=True),
            "metrics": dict(by_kind)}


def _config_of(path: Path) -> dict:
    config = _read_yaml(path / CONFIG)
    if config is None:
        raise DlmineError(f"{path / CONFIG} is damaged: expected the run's resolved config (YAML)")
    return config


def _metrics_of(info: dict) -> dict:
    out = {f"test {k}": v for k, v in (info.get("final_metrics") or {}).items()}
    best = info.get("best") or {}
    out.update({f"best.{k}": best.get(k) for k in ("monitor", "value", "epoch") if k in best})
    out.update({k: info.get(k) for k in ("status", "epochs_completed", "duration_s")})
    return out


def _side_by_side(dicts: list[dict], only_different: bool) -> dict:
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    table = {k: [d.get(k) for d in dicts] for k in keys}
    if only_different:
        table = {k: v for k, v in table.items() if any(x != v[0] for x in v[1:])}
    return table


def value_text(value) -> str:
    """A cell of `dlmine compare`: numbers with 4 decimals, absent keys as `-`."""
    if value is None:
        return ABSENT
    if isinstance(value, float | bool):
        return number(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def difference(values: list) -> str:
    """`B - A` of two numbers, signed; empty for anything else."""
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return ""
    delta = values[1] - values[0]
    if isinstance(delta, int):
        return f"{delta:+d}"
    return ("+" if delta >= 0 else "") + number(float(delta))
