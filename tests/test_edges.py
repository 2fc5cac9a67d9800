"""Edge cases at the command line: wrong answers, lost files, internal errors, checks at the edge.

Every test drives `dlmine.cli.main` (in-process, through click's runner, with `sys.argv` set as
the real command would set it) or `python -m dlmine` (a subprocess, for a run killed with
SIGKILL), and asserts the exit code and the message dlmine should print. Trainings are tiny (a
few dozen rows, 1 epoch, small Dense models) and shared through module-scoped fixtures; the
killed run trains in a subprocess started with the module, while the in-process tests go on.

Messages that the issue leaves open follow the table messages dlmine already prints:
`FILE: column 'NAME', row N: what was received and what was expected`, N being the line of the
file (the header is line 1).

Emulations, because the tests run as root on one machine:
- read-only: root ignores permission bits and no read-only bind mount is available, so the run
  directory is given to `nobody`, the file made 0444 and its folder 0555, and the command runs
  with the effective uid and gid of `nobody` (`os.seteuid`, restored after it); as another
  user the chmods alone do it;
- a full disk: a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes the first write of the
  run directory fail (EFBIG) in the same `atomic_write` where ENOSPC would;
- Ctrl-C: a thread sends SIGINT to this process, under a handler that raises KeyboardInterrupt
  only while the command runs (as Python's default handler would);
- "takes seconds": a CPU-time alarm (SIGPROF; pytest-timeout owns SIGALRM).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, write_config
from tests.edge_support import TABLE, clean, invoke, make_npz, squash, table_text

NOBODY = 65534

TINY = """\
name: tiny
seed: 1
dataset:
  name: npz
  path: tiny.npz
  validation_split: 0.25
model:
  layers:
    - Flatten
    - Dense: {units: 8, activation: relu}
    - Dense: {units: 3, activation: softmax}
training:
  epochs: 1
  batch_size: 16
  jit_compile: false  # XLA compiles each loaded model again: seconds per command
"""

# --- helpers -------------------------------------------------------------------------------------


def dlmine_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
            "KERAS_BACKEND": "tensorflow"}


def read_json(path: Path):
    return json.loads(path.read_text())


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@contextlib.contextmanager
def as_nobody():
    """Run the block with the effective uid/gid of `nobody` (root ignores permission bits)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def give_to_nobody(folder: Path) -> None:
    if os.geteuid() != 0:
        return
    for path in [folder, *folder.rglob("*")]:
        os.lchown(path, NOBODY, NOBODY)


def make_read_only(run: Path, name: str) -> None:
    """`name` (a file of the run) read-only, and its folder too, for the user `nobody`."""
    give_to_nobody(run)
    os.chmod(run / name, 0o444)
    os.chmod((run / name).parent, 0o555)


class Background:
    """`python -m dlmine ARGS` started now; output in temporary files; `watch` runs in a thread."""

    def __init__(self, *args, watch=None):
        self.args = [str(a) for a in args]
        self._out, self._err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.popen = subprocess.Popen([sys.executable, "-m", "dlmine", *self.args], cwd=ROOT,
                                      env=dlmine_env(), stdout=self._out, stderr=self._err,
                                      text=True)
        self.note = None
        self.thread = None
        if watch is not None:
            self.thread = threading.Thread(target=watch, args=(self,), daemon=True)
            self.thread.start()

    def wait(self, timeout: float = 300) -> int:
        if self.thread is not None:
            self.thread.join(timeout)
        return self.popen.wait(timeout=timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=60)

    @property
    def stdout(self) -> str:
        self._out.seek(0)
        return self._out.read()

    @property
    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read()


def committed_epoch(run: Path) -> int:
    try:
        return json.loads((run / "training_state.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


# --- module fixtures: data, runs, background processes -------------------------------------------

@pytest.fixture(scope="module")
def work():
    """A folder everyone can traverse (tmp_path's parents are root's 0700 folders), so that a
    command run as `nobody` reaches the runs and data inside."""
    folder = Path(tempfile.mkdtemp(prefix="dlmine-edges-"))
    os.chmod(folder, 0o755)
    make_npz(folder / "tiny.npz")
    write_config(folder, TINY, "tiny.yaml")
    with np.load(make_npz(folder / "three.npz", 3, seed=5)) as three:
        np.savez(folder / "input.npz", x=three["x_train"])  # 3 samples to predict
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def background(work):
    """`python -m dlmine train` of 400 epochs, started with the module and killed (SIGKILL) once
    two epochs are committed, while the in-process tests go on."""
    write_config(work, TINY.replace("epochs: 1", "epochs: 400").replace("batch_size: 16",
                                                                        "batch_size: 4"),
                 "long.yaml")

    def kill_after_two_epochs(proc):
        run = work / "killed"
        while proc.popen.poll() is None:
            if committed_epoch(run) >= 2:
                proc.popen.kill()
                proc.note = "killed"
                return
            time.sleep(0.002)

    proc = Background("train", work / "long.yaml", "--run-dir", work / "killed",
                      watch=kill_after_two_epochs)
    yield {"killed": proc}
    proc.kill()


@pytest.fixture(scope="module", autouse=True)
def _start_background(background):
    """The subprocess starts with the module, not when the first test needing it runs."""


@pytest.fixture(scope="module")
def tiny_run(work) -> Path:
    """A completed 1-epoch run on tiny.npz (no x_test: the test split is held out by seed)."""
    run = work / "tiny-run"
    result = invoke("train", work / "tiny.yaml", "--run-dir", run)
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def table_run(work) -> Path:
    """A completed run on a table (dataset.missing: error)."""
    (work / "table.csv").write_text(table_text())
    write_config(work, TABLE.replace("MISSING", "error"), "table.yaml")
    run = work / "table-run"
    result = invoke("train", work / "table.yaml", "--run-dir", run)
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def failed_folds(work):
    """`train --folds 2` whose first fold diverges (SGD, learning rate 1e12): (result, parent)."""
    config = write_config(work, TINY.replace("batch_size: 16", "batch_size: 16\n  optimizer: "
                                             "{name: sgd, learning_rate: 1.0e+12}\n"
                                             # in bfloat16 (mixed precision) the
                                             # loss saturates instead of turning NaN
                                             "  mixed_precision: false"),
                          "diverging.yaml")
    run = work / "folds-failed"
    return invoke("train", config, "--run-dir", run, "--folds", "2"), run


@pytest.fixture(scope="module")
def killed(background, work) -> Path:
    """A run killed with SIGKILL after two or more committed epochs (of 400)."""
    proc = background["killed"]
    code = proc.wait()
    assert proc.note == "killed" and code == -signal.SIGKILL, (code, proc.stderr[-3000:])
    return work / "killed"


# --- item 7: a hand-edited config.yaml ---------------------------------------------------------

def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (old, text)
    path.write_text(text.replace(old, new, 1))


def test_evaluate_refuses_a_config_yaml_edited_after_training(tiny_run, work):
    """Today: a changed seed rebuilds another test split, the warning blames the data, and
    eval.json is overwritten with that split's metrics."""
    run = copy_run(tiny_run, work / "edited-seed")
    _edit(run / "config.yaml", "seed: 1\n", "seed: 2\n")
    before = (run / "eval.json").read_bytes()
    result = invoke("evaluate", run)
    clean(result)
    assert result.exit_code == 2, result.output
    assert squash(f"Error: {run}/config.yaml was edited after the run was trained (its sha256 "
                  "differs from config_sha256 in run.json):") in squash(result.stderr)
    assert "  seed: 1 -> 2\n" in result.stderr
    assert "data differ" not in result.stderr
    assert (run / "eval.json").read_bytes() == before


def test_resume_of_a_completed_run_refuses_an_edited_config_yaml(tiny_run, work):
    run = copy_run(tiny_run, work / "edited-completed")
    _edit(run / "config.yaml", "epochs: 1\n", "epochs: 2\n")
    before = snapshot(run)
    result = invoke("train", "--resume", run)
    clean(result)
    assert result.exit_code == 2, result.output
    assert squash(f"Error: {run}/config.yaml was edited after the run was trained") in squash(
        result.stderr)
    assert "  training.epochs: 1 -> 2\n" in result.stderr
    assert snapshot(run) == before


def test_resume_of_a_killed_run_refuses_an_edited_config_yaml(killed, work):
    """Today: the resume trains with the edited epochs and records `config_changes: []`."""
    run = copy_run(killed, work / "edited-killed")
    wanted = committed_epoch(run) + 1
    _edit(run / "config.yaml", "epochs: 400\n", f"epochs: {wanted}\n")
    result = invoke("train", "--resume", run)
    clean(result)
    info = read_json(run / "run.json")
    assert result.exit_code == 2, (result.output, info.get("resumed"))
    assert squash(f"Error: {run}/config.yaml was edited after the run was trained") in squash(
        result.stderr)
    assert f"  training.epochs: 400 -> {wanted}\n" in result.stderr
    assert "resumed" not in info


def test_resume_force_accepts_an_edited_config_yaml_and_records_it(killed, work):
    """--force: the edit is recorded under `resumed` and becomes the run's config, so that
    evaluate accepts the run afterwards."""
    run = copy_run(killed, work / "edited-forced")
    wanted = committed_epoch(run) + 1
    _edit(run / "config.yaml", "epochs: 400\n", f"epochs: {wanted}\n")
    result = invoke("train", "--resume", run, "--force")
    clean(result)
    assert result.exit_code == 0, result.output
    info = read_json(run / "run.json")
    assert info["status"] == "completed", info
    assert info["resumed"][-1]["config_changes"] == [f"training.epochs: 400 -> {wanted}"]
    assert info["config"]["training"]["epochs"] == wanted
    evaluated = invoke("evaluate", run)
    clean(evaluated)
    assert evaluated.exit_code == 0, evaluated.output


# --- items 8-9: predictions into a run, a full disk ---------------------------------------------

@pytest.mark.parametrize("target", ["history.csv", "new.csv", "checkpoints/p.csv", "report/p.jsonl"])
def test_predict_output_inside_the_run_directory_is_refused(tiny_run, work, target):
    """Today: `--output RUN/history.csv` overwrites the history (exit 0), then `report` crashes."""
    run = copy_run(tiny_run, work / f"output-{target.replace('/', '-')}")
    (run / "report").mkdir(exist_ok=True)
    before = snapshot(run)
    output = run / target
    result = invoke("predict", run, work / "input.npz", "--output", output)
    clean(result)
    assert result.exit_code == 2, result.output
    assert (f"Error: --output {output}: inside the run directory {run}; write predictions "
            f"elsewhere, or under {run}/predictions/\n") == result.stderr
    assert snapshot(run) == before
    report = invoke("report", run)
    clean(report)
    assert report.exit_code == 0, report.output


def test_predict_output_into_the_predictions_folder_is_allowed(tiny_run, work):
    run = copy_run(tiny_run, work / "output-predictions")
    output = run / "predictions" / "2026" / "p.csv"  # predictions/ is made when written to
    result = invoke("predict", run, work / "input.npz", "--output", output)
    clean(result)
    assert result.exit_code == 0, result.output
    assert len(list(csv.DictReader(output.read_text().splitlines()))) == 3


def test_predict_output_into_a_missing_folder_is_refused_before_any_work(tiny_run, work):
    output = work / "no-such-folder" / "p.csv"
    result = invoke("predict", tiny_run, work / "missing-input.npz", "--output", output)
    clean(result)
    assert (result.exit_code, result.stderr) == (
        2, f"Error: --output {output}: the folder {output.parent} does not exist\n")


def test_predict_output_onto_its_own_input_is_refused(table_run, work):
    source = work / "own-input.csv"
    source.write_text("x1,x2,c\n0.1,0.2,a\n0.4,0.3,b\n")
    before = source.read_bytes()
    result = invoke("predict", table_run, source, "--output", source)
    clean(result)
    assert result.exit_code == 2, result.output
    assert result.stderr == (f"Error: --output {source} is the input file; the output never "
                             "overwrites its input\n")
    assert source.read_bytes() == before


def test_predict_output_onto_the_runs_training_data_is_refused(table_run):
    data = Path(yaml.safe_load((table_run / "config.yaml").read_text())["dataset"]["path"])
    before = data.read_bytes()
    result = invoke("predict", table_run, data, "--output", data)
    clean(result)
    assert result.exit_code == 2, result.output
    result = invoke("predict", table_run, data.with_suffix(".other.csv"), "--output", data)
    assert result.stderr == (f"Error: --output {data} is the data file the run was trained on "
                             f"(dataset.path: {data.resolve()}); write the output elsewhere\n")
    assert data.read_bytes() == before


def test_full_disk_when_the_run_directory_is_created_leaves_nothing(work):
    """Today: `cannot write .../config.yaml` and an empty run directory (with checkpoints/).

    A full disk is emulated in-process by a file-size limit of 600 bytes (RLIMIT_FSIZE, SIGXFSZ
    ignored): config.yaml, the first file of a run directory, is larger, and its write fails
    (EFBIG) where a full disk fails (ENOSPC), in the same `atomic_write`."""
    run = work / "full-disk"
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (600, old_limit[1]))
    try:
        result = invoke("train", work / "tiny.yaml", "--run-dir", run)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    clean(result)
    assert result.exit_code == 1, result.output
    assert (f"Error: cannot write {run}/config.yaml: File too large; the previous version of the "
            "file, if any, is intact") in result.stderr
    assert not run.exists(), sorted(str(p.relative_to(work)) for p in run.rglob("*"))


# --- items 11-12: a read-only resume, a damaged history ------------------------------------------

def test_resume_of_a_completed_run_in_a_read_only_directory_has_nothing_to_do(tiny_run, work):
    """Today: internal error (PermissionError on .lock.PID)."""
    run = copy_run(tiny_run, work / "read-only-resume")
    make_read_only(run, "run.json")
    with as_nobody():
        result = invoke("train", "--resume", run)
    clean(result)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{run}\n"
    assert squash(f"{run} is already completed (1 epochs); nothing to do") in squash(result.stderr)


def test_report_on_a_damaged_history_csv_warns_and_writes_the_rest(tiny_run, work):
    """Today: internal error (KeyError: 'epoch') when history.csv holds something else."""
    run = copy_run(tiny_run, work / "damaged-history")
    (run / "history.csv").write_text("sample,class,class_index\n0,red,0\n")
    result = invoke("report", run)
    clean(result)
    assert result.exit_code == 0, result.output
    assert squash(f"Warning: {run}/history.csv is damaged (no 'epoch' column); the report has no "
                  "learning curves") in squash(result.stderr)
    assert (run / "report" / "report.html").is_file()


# --- items 13-22: checks at the edge ------------------------------------------------------------

@pytest.mark.parametrize("kind", ["npz-missing", "csv-without-its-target"])
def test_train_onto_an_existing_run_is_refused_before_any_data_loads(tiny_run, work, kind):
    """Today: the data are read first, so their error (or their loading time) comes first."""
    if kind == "npz-missing":
        config = write_config(work, TINY.replace("tiny.npz", "not-there.npz"), "exists-npz.yaml")
    else:  # a table is read before its model is built; this one fails as soon as it is read
        (work / "no-target.csv").write_text("x1,x2\n1,2\n3,4\n")
        config = write_config(work, TABLE.replace("MISSING", "error").replace("table.csv",
                                                                               "no-target.csv"),
                              "exists-csv.yaml")
    before = snapshot(tiny_run)
    result = invoke("train", config, "--run-dir", tiny_run)
    clean(result)
    assert result.exit_code == 2, result.output
    assert result.stderr == (f"Error: run directory {tiny_run} already exists; dlmine never "
                             "overwrites a run. Choose another --run-dir\n")
    assert snapshot(tiny_run) == before


def test_tune_metric_that_history_will_not_have_is_a_config_error_before_any_trial(work,
                                                                                   monkeypatch):
    """Today: trial 0 trains, then `study/config.yaml:38: tune.metric: ...` (exit 2), and the
    study directory is left behind."""
    text = TINY + ("tune:\n  metric: val_auc\n  trials: 1\n  space:\n"
                   "    model.layers[1].Dense.units: {choice: [4, 8]}\n")
    write_config(work, text, "tune-metric.yaml")
    line = text.splitlines().index("  metric: val_auc") + 1
    monkeypatch.chdir(work)
    study = work / "study-metric"
    result = invoke("tune", "tune-metric.yaml", "--trials", "1", "--study-dir", study)
    clean(result)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        f"Error: 1 problem in the config:\n  tune-metric.yaml:{line}: tune.metric: 'val_auc' is "
        "not logged by this training"), result.stderr
    assert not study.exists()


def test_a_k_fold_parent_whose_fold_fails_says_so(failed_folds):
    """Today: fold 1 diverges, the command exits 1, and the parent's run.json stays `running`."""
    result, run = failed_folds
    clean(result)
    assert result.exit_code == 1, result.output
    assert "training diverged" in result.stderr
    info = read_json(run / "run.json")
    assert info["status"] == "failed", info
    assert info["ended"] is not None
    assert info.get("error", "").startswith("fold 1 of 2 failed: training diverged"), info


def test_evaluate_on_a_k_fold_parent_names_its_folds(failed_folds):
    """Today: `preprocessing.json: missing; ...`, as if the parent were a damaged run."""
    _, run = failed_folds
    result = invoke("evaluate", run)
    clean(result)
    assert result.exit_code == 2, result.output
    assert result.stderr == (f"Error: {run} holds a 2-fold cross-validation, not one model; "
                             f"evaluate one of its folds: {run}/fold-1 ... {run}/fold-2\n")
    assert not (run / "eval.json").exists()


def test_sigint_during_the_final_evaluation_marks_the_run_interrupted(work):
    """Today: the KeyboardInterrupt reaches `fail_run`, so run.json says `failed`.

    In-process: a thread sends SIGINT to this process as soon as model.keras appears (it is
    written just before the final evaluation of 50,000 test samples); the handler installed here
    raises KeyboardInterrupt only while the command runs, as Python's default handler would."""
    make_npz(work / "big.npz", 60, test=50_000)
    config = write_config(work, TINY.replace("tiny.npz", "big.npz"), "big.yaml")
    run = work / "sigint"
    inside, stop, sent = threading.Event(), threading.Event(), []

    def handler(signum, frame):
        if inside.is_set():
            raise KeyboardInterrupt

    def watch():
        while not stop.is_set():
            if (run / "model.keras").exists():
                sent.append(time.monotonic())
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.001)

    previous = signal.signal(signal.SIGINT, handler)
    thread = threading.Thread(target=watch, daemon=True)
    inside.set()
    thread.start()
    try:
        result = invoke("train", config, "--run-dir", run)
    finally:
        inside.clear()
        stop.set()
        thread.join(10)
        time.sleep(0.05)  # a signal still pending runs the handler above, which ignores it
        signal.signal(signal.SIGINT, previous)
    assert sent, f"the run ended ({result.exit_code}) before its final evaluation"
    clean(result)
    assert result.exit_code == 130, result.output
    info = read_json(run / "run.json")
    assert info["status"] == "interrupted", info
    assert info["epochs_completed"] == 1
    resumed = invoke("train", "--resume", run)  # README: --resume evaluates it
    clean(resumed)
    assert resumed.exit_code == 0, resumed.output
    assert read_json(run / "run.json")["status"] == "completed"
    assert read_json(run / "eval.json")["samples"] == 50_000


def test_runs_shows_the_committed_epochs_of_a_killed_run(killed):
    """Today: `epochs_completed` is written at the end of training only, so a killed run shows 0."""
    result = invoke("runs", killed.parent, "--json")
    clean(result)
    assert result.exit_code == 0, result.output
    row = next(r for r in json.loads(result.stdout) if r["path"] == str(killed))
    assert row["status"] == "running"
    assert row["epochs_completed"] == committed_epoch(killed) >= 2


def test_the_lock_records_the_host_and_a_lock_of_another_host_is_not_taken_over(killed,
                                                                                background, work):
    """Today: `.lock` holds the pid alone, so a lock taken on another machine of a shared file
    system looks dead here and is taken over."""
    pid = background["killed"].popen.pid
    lock = (killed / ".lock").read_text()
    host = socket.gethostname()
    assert str(pid) in lock and host in lock, f"the lock holds {lock!r}; expected pid {pid} and host {host}"
    run = copy_run(killed, work / "other-host-lock")
    (run / ".lock").write_text(lock.replace(host, "other-host.invalid"))
    before = snapshot(run)
    result = invoke("train", "--resume", run)
    clean(result)
    assert result.exit_code == 2, result.output
    assert result.stderr == (f"Error: {run} is in use by another dlmine process (pid {pid} on "
                             "other-host.invalid); wait for it, or stop it\n")
    assert snapshot(run) == before


def test_a_path_holding_the_word_refused_does_not_change_how_an_error_is_handled(tiny_run, work):
    """Today: `"refused" in str(exc)` decides that a damaged best.keras is a refused model, so a
    run under a folder named `refused` gets no fallback to last.keras."""
    run = copy_run(tiny_run, work / "refused" / "run")
    best = run / "checkpoints" / "best.keras"
    best.write_bytes(best.read_bytes()[:1000])
    result = invoke("evaluate", run)
    clean(result)
    assert result.exit_code == 0, result.output
    assert squash(f"Warning: {best} is damaged: not a .keras archive (truncated or overwritten); "
                  "evaluating the last checkpoint instead") in squash(result.stderr)
    assert read_json(run / "eval.json")["checkpoint"] == "last"


@pytest.mark.parametrize("args, says", [
    (["train"], "give a CONFIG to train, or --resume RUN_DIR"),
    (["train", "--bogus"], "No such option '--bogus'"),
    (["evaluate", "RUN", "--checkpoint", "worst"], "'worst' is not one of 'best', 'last'"),
    (["predict", "RUN", "INPUT", "--output", "p.txt"], "--output p.txt: expected a file ending "
     ".csv (CSV) or .jsonl (JSON Lines); received '.txt'"),
], ids=["no-config", "unknown-option", "bad-choice", "dlmine-usage-error"])
def test_every_exit_2_error_has_one_format(tiny_run, work, args, says):
    """Today: click's usage errors print `Usage: ...`, `Try ...` and then `Error: ...`."""
    args = [{"RUN": str(tiny_run), "INPUT": str(work / "input.npz")}.get(a, a) for a in args]
    result = invoke(*args)
    clean(result)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: "), result.stderr
    assert says in result.stderr
    assert "Usage:" not in result.stderr


def test_bare_dlmine_still_prints_its_help():
    """click shows the help of a bare `dlmine` through a UsageError: not an `Error:` line."""
    result = invoke()
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.output and "Commands:" in result.output
    assert "Error:" not in result.output


def test_a_dlmine_error_naming_a_gloo_path_is_not_taken_for_a_peer_failure():
    """`"gloo" in str(exc)` took any error that names a gloo path for a peer's stop. JAX raises
    a failed collective as a plain ValueError, so its text still tells it (test_distributed)."""
    from dlmine.backend.distributed import _collective_failed
    from dlmine.errors import DataError

    assert not _collective_failed(DataError("/data/gloo/x.npz: missing"))
    assert _collective_failed(ValueError("UNKNOWN: Gloo AllGather failed: [pair.cc:538] Read "
                                         "error [127.0.0.1]:6562: Connection reset by peer"))


def test_saved_config_yaml_resolves_every_auto_and_null_default(table_run):
    """README: the saved config.yaml holds every key with its resolved value, except
    mixed_precision: auto and jit_compile: auto (run.json records `precision` and `jit_compile`)
    and embedding_dim: null (the model's column_embedding layer holds the widths)."""
    config = yaml.safe_load((table_run / "config.yaml").read_text())
    info = read_json(table_run / "run.json")
    assert config["training"]["checkpoint"]["mode"] == "min"  # val_loss
    assert config["training"]["early_stopping"]["mode"] == "min"
    assert config["tune"]["direction"] == "maximize"  # val_accuracy
    assert config["training"]["mixed_precision"] == "auto"
    assert isinstance(info["precision"], str) and info["precision"]
    assert config["training"]["jit_compile"] == "auto"
    assert isinstance(info["jit_compile"], bool)
    assert config["dataset"]["embedding_dim"] is None
    assert "column_embedding" in (table_run / "train.log").read_text()


# --- items 25-28: messages -----------------------------------------------------------------------

def test_a_long_set_value_is_cut_in_the_message(tiny_run):
    value = "x" * 5000
    result = invoke("check", tiny_run.parent / "tiny.yaml", "--set", f"training.epochs={value}")
    clean(result)
    assert result.exit_code == 2, result.output
    assert "x" * 100 not in result.stderr
    assert "  --set training.epochs=xxx" in result.stderr
    assert ": training.epochs: expected an integer, received 'xxx" in result.stderr
    assert len(result.stderr) < 400, len(result.stderr)


def test_after_a_checkpoint_fallback_the_table_names_the_checkpoint_used(tiny_run, work):
    """Today: the title says `best checkpoint` over the metrics of last.keras."""
    run = copy_run(tiny_run, work / "fallback-table")
    best = run / "checkpoints" / "best.keras"
    best.write_bytes(best.read_bytes()[:1000])
    result = invoke("evaluate", run)
    clean(result)
    assert result.exit_code == 0, result.output
    assert f"test metrics ({run.name}, last checkpoint" in result.stdout
    assert "best checkpoint" not in result.stdout


def test_evaluate_on_a_read_only_run_prints_its_metrics_then_says_it_cannot_save_them(tiny_run,
                                                                                      work):
    run = copy_run(tiny_run, work / "read-only-evaluate")
    make_read_only(run, "eval.json")
    with as_nobody():
        result = invoke("evaluate", run)
    clean(result)
    assert result.exit_code == 1, result.output
    assert f"test metrics ({run.name}, best checkpoint)" in result.stdout
    assert "accuracy" in result.stdout and "loss" in result.stdout
    assert squash(f"Error: cannot write {run}/eval.json: Permission denied") in squash(
        result.stderr)


# --- 9. fault injection: every command against one damaged file of a run --------------------------------

FILES = ["config.yaml", "run.json", "history.csv", "eval.json", "preprocessing.json",
         "checkpoints/best.keras", "checkpoints/last.keras", "training_state.json"]
# Read-only: every file of a folder 0444 and the folder 0555, as `nobody`. Making one file of
# the run's own folder read-only that way makes the folder read-only, the same case for all six
# files there, so the folder stands for them; likewise checkpoints/ for its two files.
CASES = ([(file, mutation) for file in FILES for mutation in ("truncated", "deleted")]
         + [(".", "read-only"), ("checkpoints", "read-only")])
CASE_IDS = [f"{'run-dir' if f == '.' else f}-{m}" for f, m in CASES]
# What each command cannot do without (truncated or deleted: it must fail and name the file),
# what else it reads (truncated: it must name the file, in its error or in a warning; deleted:
# if it fails, it names the file); a command given neither must do its job (exit 0).
ESSENTIAL = {
    "runs": set(),
    "compare": {"config.yaml", "run.json"},
    "predict": {"config.yaml", "preprocessing.json", "checkpoints/best.keras"},
    "report": {"run.json"},
    "export": {"checkpoints/best.keras"},
    "resume": {"config.yaml", "run.json"},
    "evaluate": {"config.yaml", "preprocessing.json"},
}
READS = {
    "runs": {"config.yaml", "run.json"},
    "compare": set(),
    "predict": {"run.json"},
    "report": {"config.yaml", "history.csv", "eval.json"},
    "export": {"config.yaml", "preprocessing.json"},
    "resume": set(),
    "evaluate": {"run.json", "checkpoints/best.keras"},
}
WRITES_IN_RUN = {"report", "export", "evaluate"}  # eval.json, report/, export/ (a completed
# run's `train --resume` writes nothing: "completed, nothing to do")
# In this order: the commands that only read first, evaluate (which rewrites eval.json) last.
COMMANDS = ["runs", "compare", "predict", "report", "export", "resume", "evaluate"]


def command_args(name: str, run: Path, other: Path, work: Path) -> list:
    return {"runs": ["runs", run.parent, "--json"],
            "compare": ["compare", run, other, "--json"],
            "predict": ["predict", run, work / "input.npz"],
            "report": ["report", run],
            "export": ["export", run, "--format", "keras"],
            "resume": ["train", "--resume", run],
            "evaluate": ["evaluate", run]}[name]


def judge(name: str, file: str, mutation: str, run: Path, result) -> str | None:
    """What is wrong with this outcome, or None."""
    out, err, code = result.output, result.stderr, result.exit_code
    said = f"exit {code}: {err.strip()[-300:]!r}"
    base = Path(file).name
    if "Traceback" in out or "internal error" in out:
        return f"internal error or traceback; {said}"
    if code != 0 and "Error: " not in err:
        return f"fails without an `Error: ` message; {said}"
    if name == "runs":
        rows = json.loads(result.stdout) if code == 0 else []
        row = next((r for r in rows if r["path"] == str(run)), None)
        if code != 0 or row is None:
            return f"the run is not listed; {said}"
        if file == "run.json" and row["status"] != "damaged":
            return f"status {row['status']!r}, expected 'damaged'"
        return None
    if mutation == "read-only":
        if name in WRITES_IN_RUN and file == ".":
            if code == 0 or str(run) not in squash(err):
                return f"does not say that it cannot write into the run directory; {said}"
            return None
        if code != 0:
            return f"fails, though it can do its job; {said}"
        return None
    if file in ESSENTIAL[name]:
        if code == 0 or base not in squash(err):
            return f"does not fail naming {base}; {said}"
        return None
    if file in READS[name]:
        if mutation == "truncated" and base not in squash(err):
            return f"says nothing of the damaged {base}; {said}"
        if mutation == "deleted" and code != 0 and base not in squash(err):
            return f"fails without naming {base}; {said}"
        return None
    if code != 0:
        return f"fails, though it does not need {base}; {said}"
    return None


def damage(run: Path, file: str, mutation: str) -> None:
    path = run / file
    if mutation == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif mutation == "deleted":
        path.unlink()
    else:
        give_to_nobody(run)
        for inside in path.iterdir():
            if inside.is_file():
                os.chmod(inside, 0o444)
        os.chmod(path, 0o555)


@pytest.mark.parametrize("file, mutation", CASES, ids=CASE_IDS)
def test_fault_injection_every_command_against_one_damaged_file(tiny_run, work, file, mutation):
    """runs, compare, predict, report, export --format keras, train --resume, evaluate: never an
    internal error or a traceback; a failure says `Error: ` and names its cause."""
    label = "run-dir" if file == "." else file.replace("/", "-")
    case = work / "faults" / f"{label}-{mutation}"
    case.mkdir(parents=True)
    run = copy_run(tiny_run, case / "run")
    damage(run, file, mutation)
    problems = {}
    for name in COMMANDS:
        with as_nobody() if mutation == "read-only" else contextlib.nullcontext():
            result = invoke(*command_args(name, run, tiny_run, work))
        problem = judge(name, file, mutation, run, result)
        if problem:
            problems[name] = problem
    assert not problems, "\n".join(f"{name}: {p}" for name, p in problems.items())
