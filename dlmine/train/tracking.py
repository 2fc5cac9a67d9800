"""MLflow tracking: each run (and each `dlmine tune` study) mirrored into an MLflow run.

A `Tracker` opens or continues one MLflow run and logs to it what the run directory holds:
the flattened resolved config as params, every committed epoch of `history.csv` as metrics
(step = epoch), the test metrics, the final files as artifacts, and tags for dlmine's
version, the data fingerprint and the run's status. The run directory stays the record:
MLflow failing (a server that cannot be reached, a store that refuses a write) never stops
training. The first failure is warned about once per tracking URI and process; from then on
nothing more is sent there, and `run.json`'s `mlflow.not_logged` says what is missing.

MLflow is an optional extra (`dlmine[mlflow]`), imported inside the functions that use it.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from dlmine import __version__
from dlmine.config.keys import flatten
from dlmine.errors import DlmineError
from dlmine.rundir import (
    CHECKPOINTS,
    CONFIG,
    EVAL_JSON,
    HISTORY,
    RUN_JSON,
    RunDir,
    read_config_mapping,
)

# What the run directory holds at the end, as artifacts of the same relative paths.
RUN_ARTIFACTS = (CONFIG, HISTORY, EVAL_JSON, "report", f"{CHECKPOINTS}/best.keras")
MLFLOW_STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
# MLflow retries an HTTP request 7 times over minutes by default; a tracking server that
# went away would stall training that long. Two retries, 10 s each, unless the user says.
# And MLflow prints a link to each run it ends on stdout, where dlmine prints the run directory
# alone.
ENV_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
PROBE_TIMEOUT_S = 3.0
_BATCH = 100  # MLflow takes at most 100 params or tags per request
# Tracking URIs that failed in this process, and their error: the folds of a cross-validation
# and the trials of a study neither warn again nor wait for the same server again.
_FAILED: dict[str, str] = {}


@dataclass(frozen=True)
class Target:
    """Where a run is tracked.

    Args:
        tracking_uri: an MLflow tracking URI (`http://127.0.0.1:5000`, `sqlite:///mlflow.db`,
            `file:///tmp/mlruns`); None: MLflow's default.
        experiment: the MLflow experiment's name.
        parent_run_id: the MLflow run this one is nested under (a `dlmine tune` study's).
    """

    tracking_uri: str | None
    experiment: str
    parent_run_id: str | None = None


def target(cfg, cli_uri: str | None = None) -> Target | None:
    """The tracking target of a config and `--mlflow URI` (which wins), or None for none.

    Raises:
        DlmineError: tracking is asked for, but MLflow is not installed.
    """
    section = cfg.training.tracking.mlflow
    if cli_uri is None and section is None:
        return None
    require_mlflow()
    uri = cli_uri or (section.tracking_uri if section is not None else None)
    experiment = (section.experiment if section is not None else None) or cfg.name
    return Target(uri, experiment)


def recorded_target(info: dict) -> Target | None:
    """The target that a `run.json` or `study.json` records under `mlflow`, if any."""
    block = info.get("mlflow")
    if not isinstance(block, dict):
        return None
    require_mlflow()
    return Target(block.get("tracking_uri"), block.get("experiment") or info.get("name") or "dlmine",
                  block.get("parent_run_id"))


def require_mlflow():
    """The `mlflow` module.

    Raises:
        DlmineError: it is not installed, with the command that installs it.
    """
    try:
        import mlflow
    except ModuleNotFoundError as exc:
        if exc.name != "mlflow":
            raise
        raise DlmineError("MLflow tracking (training.tracking.mlflow, --mlflow or "
                          "MLFLOW_TRACKING_URI) needs MLflow: pip install 'dlmine[mlflow]'") from None
    return mlflow


def mlflow_key(name: str) -> str:
    """A config key or metric name as MLflow accepts it: `model.layers[0].Dense.units` ->
    `model.layers.0.Dense.units`, `val_hr@10` -> `val_hr_at_10`; any other character MLflow
    refuses becomes `_`."""
    name = re.sub(r"\[(\d+)\]", r".\1", name).replace("@", "_at_")
    return re.sub(r"[^\w.\- /]", "_", name)


def params_of(config: dict) -> dict[str, str]:
    """The flattened resolved config as MLflow params: dotted keys, values as YAML writes
    scalars (`null`, `true`, `0.001`, `[28, 28]`)."""
    return {mlflow_key(key): _text(value) for key, value in flatten(config).items()}


def _text(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}"
    return str(value)


def epoch_metrics(row: dict) -> dict[str, float]:
    """One `history.csv` row as MLflow metrics: every finite value but the epoch."""
    return {mlflow_key(k): float(v) for k, v in row.items()
            if k != "epoch" and isinstance(v, int | float) and math.isfinite(v)}


class Tracker:
    """One MLflow run: opened or continued, logged to, ended; never raising.

    Args:
        target: where to track.
        name: the MLflow run's name (the run directory's folder name).
        record: called with the `mlflow` block to save (in `run.json` or `study.json`) each
            time it changes.
        warn: called once, with a message, when MLflow first fails.
        run_id: an MLflow run to continue (`--resume`), or None for a new one.
    """

    def __init__(self, target: Target, name: str, record: Callable[[dict], None],
                 warn: Callable[[str], None], run_id: str | None = None):
        self.target, self.name, self.record, self.warn = target, name, record, warn
        self.run_id = run_id
        self.client = None
        self.error: str | None = None
        self.not_logged: list[str] = []
        self.missed_epochs: list[int] = []
        self.tracking_uri: str | None = None  # as MLflow resolved it
        self.experiment_id: str | None = None
        self._logged_params: dict[str, str] = {}
        self._logged_steps: set[int] = set()

    # --- the run's life ------------------------------------------------------------------

    def open(self, tags: dict, params: dict[str, str]) -> None:
        """Connect, create (or reopen) the MLflow run, log tags and the params it lacks."""
        if self._try("the MLflow run", self._connect) and self._try("the MLflow run", self._open_run, tags):
            self._try("params", self._log_params, params)
        elif "params" not in self.not_logged:
            self.not_logged.append("params")
        self._save()

    def log_epochs(self, rows: list[dict]) -> None:
        """Log the epochs of `rows` that the MLflow run does not hold yet."""
        for row in rows:
            if row["epoch"] in self._logged_steps:
                continue
            if self._try(None, self._log_metrics, epoch_metrics(row), row["epoch"]):
                self._logged_steps.add(row["epoch"])
            else:
                self.missed_epochs.append(row["epoch"])
                self._save()

    def finish(self, status: str, folder: Path, artifacts=RUN_ARTIFACTS,
               metrics: dict | None = None, metrics_are: str = "test metrics") -> None:
        """Log the final metrics and the artifacts that exist, the status tag, and end the run.

        Args:
            status: dlmine's status (`completed`, `failed`, `interrupted`).
            folder: the run (or study) directory the artifact paths are relative to.
            metrics: final metrics (the test metrics as `test_<name>`), logged at step 0.
            metrics_are: what to call them in `not_logged`.
        """
        if metrics:
            self._try(metrics_are, self._log_metrics, metrics, 0)
        for name in artifacts:
            if (folder / name).exists():
                self._try(f"artifact {name}", self._log_artifact, folder, name)
        self._try("the status", self._end, status)
        self._save()

    # --- MLflow calls --------------------------------------------------------------------

    def _connect(self) -> None:
        from mlflow import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its database set-up chatter
        for key, value in ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
        _probe(self.target.tracking_uri)
        self.client = MlflowClient(tracking_uri=self.target.tracking_uri)
        self.tracking_uri = self.client.tracking_uri

    def _open_run(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        client = self.client
        if self.run_id is not None:
            client.update_run(self.run_id, status="RUNNING")
            run = client.get_run(self.run_id)
            self._logged_params = dict(run.data.params)
            self._logged_steps = {m.step for key in run.data.metrics
                                  for m in client.get_metric_history(self.run_id, key)}
        else:
            run_tags = {"mlflow.runName": self.name}
            if self.target.parent_run_id:
                run_tags["mlflow.parentRunId"] = self.target.parent_run_id
            run = client.create_run(self._experiment_id(), tags=run_tags, run_name=self.name)
            self.run_id = run.info.run_id
        self.experiment_id = run.info.experiment_id
        self._save()
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for start in range(0, len(items), _BATCH):
            client.log_batch(self.run_id, tags=items[start:start + _BATCH])

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.target.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.target.experiment)
        except MlflowException:  # another process (a worker of a shared study) made it first
            found = self.client.get_experiment_by_name(self.target.experiment)
            if found is None:
                raise
            return found.experiment_id

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        changed = sorted(k for k, v in params.items()
                         if k in self._logged_params and self._logged_params[k] != v)
        if changed:  # MLflow params cannot change; the resumed run's config.yaml has them
            self.not_logged.append("changed params (MLflow keeps the first values): "
                                   + ", ".join(changed))
        items = [Param(k, v) for k, v in params.items() if k not in self._logged_params]
        for start in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + _BATCH])

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step)
                                                    for k, v in metrics.items()])

    def _log_artifact(self, folder: Path, name: str) -> None:
        path = folder / name
        parent = str(Path(name).parent) if Path(name).parent != Path(".") else None
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=name)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path=parent)

    def _end(self, status: str) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag("dlmine.status", status)])
        self.client.set_terminated(self.run_id, MLFLOW_STATUS[status])

    # --- failures ------------------------------------------------------------------------

    def _try(self, what: str | None, call, *args) -> bool:
        """Run one MLflow call; after a failure (this one or an earlier), note `what` as not
        logged and return False. `what` None: the caller notes it."""
        if self.error is None and self.target.tracking_uri in _FAILED:
            self.error = _FAILED[self.target.tracking_uri]
        if self.error is None:
            try:
                call(*args)
                return True
            except Exception as exc:  # noqa: BLE001 - MLflow, HTTP and disk errors alike
                self.error = f"{type(exc).__name__}: {_first_line(exc)}"
                if self._uri().startswith("file:") and "maintenance" in str(exc) and \
                        os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
                    self.error = ("MLflow refuses its file store (file: URIs) unless "
                                  "MLFLOW_ALLOW_FILE_STORE=true is set; set it, or log to a "
                                  "database: --mlflow sqlite:///mlflow.db")
                _FAILED[self.target.tracking_uri] = self.error
                self.warn(f"MLflow: cannot log to {self._uri()}: {self.error}; training goes "
                          f"on without MLflow, and {RUN_JSON} (mlflow.not_logged) says what "
                          "was not logged")
        if what is not None and what not in self.not_logged:
            self.not_logged.append(what)
        return False

    def _uri(self) -> str:
        return self.tracking_uri or self.target.tracking_uri or "MLflow's default"

    def _save(self) -> None:
        missed = [f"metrics of epochs {_ranges(self.missed_epochs)}"] if self.missed_epochs else []
        self.record({
            "tracking_uri": without_password(self._uri()), "experiment": self.target.experiment,
            "experiment_id": self.experiment_id, "run_id": self.run_id,
            "parent_run_id": self.target.parent_run_id, "error": self.error,
            "not_logged": self.not_logged + missed})


def _probe(uri: str | None) -> None:
    """Fail at once, not after MLflow's retries, when an HTTP tracking server does not answer.

    Raises:
        ConnectionError: nothing accepts a connection at the URI's host and port.
    """
    parsed = urllib.parse.urlparse(uri or "")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise ConnectionError(f"no tracking server answers at {parsed.hostname}:{port} "
                              f"({exc.strerror or exc})") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> `1-3, 5`."""
    out, numbers = [], sorted(set(numbers))
    for n in numbers:
        if out and out[-1][1] == n - 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in out)


# --- one run directory ---------------------------------------------------------------------

def open_tracker(target: Target | None, folder: Path, info: dict, record: Callable[[dict], None],
                 tags: dict, warn: Callable[[str], None]) -> Tracker | None:
    """Open the MLflow run of a run (or study) directory and log its tags and the params of
    its `config.yaml`; or continue the run that `info` (its `run.json` or `study.json`)
    records under `mlflow`, when that is in the same store. None without a target, given or
    recorded."""
    previous = info.get("mlflow") if isinstance(info.get("mlflow"), dict) else {}
    target = target or recorded_target(info)
    if target is None:
        return None
    recorded = previous.get("tracking_uri")
    target = replace(target, tracking_uri=target.tracking_uri or recorded,
                     parent_run_id=target.parent_run_id or previous.get("parent_run_id"))
    run_id = (previous.get("run_id") if recorded in (None, without_password(target.tracking_uri))
              else None)
    tracker = Tracker(target, folder.name, record, warn, run_id=run_id)
    tracker.open(tags, params_of(read_config_mapping(folder / CONFIG) or {}))
    return tracker


def without_password(uri: str | None) -> str | None:
    """The URI as `run.json` and `study.json` record it: a password in it masked as `***`
    (give the URI again, `--mlflow`, to resume such a run into the same MLflow run)."""
    parsed = urllib.parse.urlsplit(uri) if uri else None
    if parsed is None or not parsed.password:
        return uri
    netloc = f"{parsed.username}:***@{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))


def start_run(target: Target | None, run: RunDir, rows: list[dict] | None,
              warn: Callable[[str], None]) -> Tracker | None:
    """`open_tracker` for a run directory, then log the epochs it already has (`rows`); None
    without a target (`resume` passes the one `run.json` records)."""
    if target is None:
        return None
    info = run.read_json(RUN_JSON)
    tracker = open_tracker(target, run.path, info, lambda block: run.update_run(mlflow=block),
                           run_tags(run, info, "running"), warn)
    if tracker is not None:
        tracker.log_epochs(rows or [])
    return tracker


def nested(target: Target | None, parent: Tracker | None) -> Target | None:
    """`target` for the runs under `parent` (the folds of a cross-validation, a study's trials)."""
    if target is None or parent is None or parent.run_id is None:
        return target
    return replace(target, tracking_uri=parent.tracking_uri or target.tracking_uri,
                   parent_run_id=parent.run_id)


def run_tags(run: RunDir, info: dict, status: str) -> dict:
    """The tags of a run directory's MLflow run."""
    return {"dlmine.version": __version__, "dlmine.status": status,
            "dlmine.data_fingerprint": info.get("data_fingerprint") or "",
            "dlmine.run_dir": str(run.path.resolve())}


def finish_run(tracker: Tracker | None, run: RunDir) -> None:
    """End a run directory's MLflow run with its status, test metrics and artifacts."""
    if tracker is None:
        return
    try:
        info = run.read_json(RUN_JSON)
    except DlmineError:  # in a `finally`: the error that is on its way says more
        info = {}
    status = info.get("status") if info.get("status") in MLFLOW_STATUS else "failed"
    metrics = {f"test_{mlflow_key(k)}": float(v) for k, v in (info.get("final_metrics") or {}).items()
               if isinstance(v, int | float) and math.isfinite(v)}
    tracker.finish(status, run.path, metrics=metrics)


def log_report(run: RunDir, warn: Callable[[str], None]) -> None:
    """Add `report/` (which `dlmine report` writes after training) to the MLflow run that
    `run.json` records; nothing when it records none."""
    info = run.read_json(RUN_JSON)
    block = info.get("mlflow")
    if not isinstance(block, dict) or not block.get("run_id"):
        return
    earlier = [item for item in block.get("not_logged") or [] if item != "artifact report"]

    def record(new: dict) -> None:
        run.update_run(mlflow={**new, "error": new["error"] or block.get("error"),
                               "not_logged": earlier + new["not_logged"]})

    tracker = Tracker(recorded_target(info), run.path.name, record, warn, run_id=block["run_id"])
    tracker.experiment_id = block.get("experiment_id")
    if tracker._try("artifact report", tracker._connect):
        tracker._try("artifact report", tracker._log_artifact, run.path, "report")
    tracker._save()
