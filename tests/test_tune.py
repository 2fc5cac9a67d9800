"""`dlmine tune`: the search space checked before any trial, trials as run directories, resume,
pruning, `best.yaml`, and two processes sharing one SQLite study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml
from click.testing import CliRunner
from optuna.trial import TrialState

from dlmine.cli import main
from dlmine.config import load_config
from dlmine.errors import Interrupted, UsageError
from dlmine.results.plots import png_size
from dlmine.tune import storage
from dlmine.tune import study as tuning
from tests.conftest import ROOT, TINY_CONFIG, write_config, write_tiny_npz

TUNE_SECTION = """\
tune:
  metric: val_loss
  trials: 3
  space:
    model.layers[1].Dense.units: {choice: [4, 8]}
    training.optimizer.learning_rate: {loguniform: [1.0e-3, 1.0e-1]}
"""
TUNE_CONFIG = TINY_CONFIG + TUNE_SECTION
# `python -m dlmine tune`
RUN_TUNE = "import sys; from dlmine.cli import main; main(sys.argv[1:], prog_name='dlmine')"


def dlmine(*args):
    """`dlmine ARGS...` in-process; click's Result."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def load_study(study_dir: Path, storage: str | None = None) -> optuna.Study:
    return optuna.load_study(study_name="tiny",
                             storage=storage or f"sqlite:///{study_dir.resolve()}/study.db")


def run_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


# --- the search space, checked before any trial --------------------------------------------------

BROKEN_SPACE = """\
tune:
  metric: val_accuracy
  space:
    training.optimiser.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
    model.layers[5].Dense.units: {int: [4, 8]}
    training.epochs: {uniform: [1, 3]}
    training.batch_size: {int: [16, 16]}
    training.optimizer.learning_rate: {loguniform: [0, 0.1]}
    model.layers[1].Dense.units: {normal: [4, 8]}
    dataset.limit: {choice: []}
    model layers: {choice: [1]}
    tune.trials: {int: [1, 2]}
    seed: 3
"""


def test_every_problem_of_the_space_is_reported_before_any_trial(tmp_path, tiny_npz):
    text = TINY_CONFIG.replace("validation_split: 0.25", "validation_split: null") + BROKEN_SPACE
    cfg = write_config(tmp_path, text)
    result = dlmine("tune", cfg, "--study-dir", tmp_path / "study")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: 11 problems in the config:",
        f"  {cfg}:16: tune.metric: 'val_accuracy' needs a validation split, but "
        "dataset.validation_split is null; tune a training metric such as 'loss', or set a "
        "validation split",
        f"  {cfg}:18: tune.space.training.optimiser.learning_rate: unknown key; did you mean "
        "'training.optimizer.learning_rate'?",
        f"  {cfg}:19: tune.space.model.layers[5].Dense.units: model.layers has 3 items; received "
        "index 5",
        f"  {cfg}:20: tune.space.training.epochs: expected an integer, received 1.0 (number)",
        f"  {cfg}:21: tune.space.training.batch_size: int: expected [low, high], two integers "
        "with low < high, received [16, 16] (list)",
        f"  {cfg}:22: tune.space.training.optimizer.learning_rate: loguniform: expected [low, "
        "high], two numbers with 0 < low < high, received [0, 0.1] (list)",
        f"  {cfg}:23: tune.space.model.layers[1].Dense.units: expected one of: choice, int, "
        "uniform, loguniform; received 'normal'; did you mean 'uniform'?",
        f"  {cfg}:24: tune.space.dataset.limit: choice: expected a non-empty list of values, "
        "received [] (list)",
        f'  {cfg}:25: tune.space["model layers"]: expected a dotted key such as '
        "training.optimizer.learning_rate or model.layers[0].Conv2D.filters, received "
        "'model layers'",
        f"  {cfg}:26: tune.space.tune.trials: expected a key outside the tune: section; the "
        "search cannot search itself",
        f"  {cfg}:27: tune.space.seed: expected one distribution, {{choice: [...]}}, {{int: "
        "[low, high]}, {uniform: [low, high]} or {loguniform: [low, high]}; received 3 "
        "(integer)",
    ]
    assert not (tmp_path / "study").exists() and not (tmp_path / "runs").exists()


def test_layer_arguments_are_checked_with_keras_even_when_left_at_their_default(tmp_path,
                                                                                tiny_npz):
    space = """\
tune:
  space:
    model.layers[1].Dense.use_bias: {choice: [true, false]}
    model.layers[1].Dense.unit: {choice: [4, 8]}
    model.layers[1].Dense.activation: {choice: [relu, sigmoidd]}
"""
    cfg = write_config(tmp_path, TINY_CONFIG + space)
    result = dlmine("tune", cfg, "--study-dir", tmp_path / "study")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "Error: 2 problems in the config:"
    assert lines[1].startswith(f"  {cfg}:18: tune.space.model.layers[1].Dense.unit: Dense has no "
                               "argument 'unit'; did you mean 'units'? Valid: activation, ")
    assert lines[2] == (f"  {cfg}:19: tune.space.model.layers[1].Dense.activation: "
                        "unknown activation 'sigmoidd'; did you mean 'sigmoid'?")
    assert not (tmp_path / "study").exists()


def test_a_config_without_a_tune_section_is_a_usage_error(tiny_config, tmp_path):
    result = dlmine("tune", tiny_config, "--study-dir", tmp_path / "study")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {tiny_config} has no tune: section; expected tune: ")
    assert not (tmp_path / "study").exists()


def test_an_existing_study_directory_is_refused(tmp_path, tiny_npz):
    cfg = write_config(tmp_path, TUNE_CONFIG)
    (tmp_path / "study").mkdir()
    result = dlmine("tune", cfg, "--study-dir", tmp_path / "study")
    assert result.exit_code == 2
    assert result.stderr == (f"Error: study directory {tmp_path / 'study'} already exists; "
                             f"continue it with dlmine tune --resume {tmp_path / 'study'}, or "
                             "choose another --study-dir\n")
    assert list((tmp_path / "study").iterdir()) == []


def test_values_become_set_overrides_and_lists_can_be_chosen():
    from dlmine.tune.space import override, parse_distribution

    assert override("model.layers[0].Conv2D.filters", 32) == "model.layers[0].Conv2D.filters=32"
    assert override("training.optimizer.learning_rate", 0.00123) == \
        "training.optimizer.learning_rate=0.00123"
    assert override("model.layers[1].Dense.activation", "yes") == "model.layers[1].Dense.activation='yes'"
    kernel = parse_distribution({"choice": [[3, 3], [1, 5]]})
    assert kernel.suggest(optuna.trial.FixedTrial({"k": "[1, 5]"}), "k") == [1, 5]
    rate = parse_distribution({"loguniform": ["1e-4", "1e-2"]})  # YAML reads 1e-4 as a string
    assert rate.values == (1e-4, 1e-2) and rate.corners() == [1e-4, 1e-2]


def test_the_command_line_asks_for_a_config_or_a_study_to_resume(tmp_path):
    result = dlmine("tune")
    assert result.exit_code == 2
    assert "Error: give a CONFIG to tune, or --resume STUDY_DIR (not both)" in result.stderr
    result = dlmine("tune", "--resume", tmp_path)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {tmp_path} is not a dlmine study directory: it has no study.json\n"


def test_a_storage_password_is_never_written_and_must_be_given_again():
    url = "postgresql://dlmine:s3cret@db.example/studies"
    assert storage.masked(["tune", "c.yaml", "--storage", url], url) == [
        "tune", "c.yaml", "--storage", "postgresql://dlmine:***@db.example/studies"]
    recorded = storage.recorded_url(url)
    with pytest.raises(UsageError, match="holds a password, which dlmine does not save"):
        storage.storage_url(recorded, None, Path("study"))
    assert storage.storage_url(recorded, url, Path("study")) == url
    with pytest.raises(UsageError, match="cannot move it"):
        storage.storage_url(None, url, Path("study"))


# --- a tiny study: 2 trials, a process that dies in the third, then --resume to 3 ---------------

@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tune")
    write_tiny_npz(folder / "tiny.npz")
    cfg = write_config(folder, TUNE_CONFIG)
    study_dir = folder / "study"
    first = dlmine("tune", cfg, "--trials", 2, "--study-dir", study_dir)
    assert first.exit_code == 0, first.output
    before = {p: p.stat().st_mtime_ns for p in study_dir.glob("trial-000[01]/**/*") if p.is_file()}
    # What a process killed during its third trial leaves: the trial RUNNING, its run begun.
    worker = json.loads((study_dir / "study.json").read_text())["worker"]
    stale = load_study(study_dir).ask()
    stale.set_user_attr("worker", worker)
    stale.set_user_attr("run_dir", str((study_dir / "trial-0002").resolve()))
    (study_dir / "trial-0002").mkdir()
    (study_dir / "trial-0002" / "run.json").write_text('{"status": "running"}')
    second = dlmine("tune", "--resume", study_dir, "--trials", 3)
    assert second.exit_code == 0, second.output
    return SimpleNamespace(cfg=cfg, dir=study_dir, first=first, second=second, before=before,
                           optuna=load_study(study_dir))


def test_each_trial_is_a_run_directory_trained_with_the_trial_values(study):
    assert study.first.stdout == f"{study.dir}\n" and study.second.stdout == f"{study.dir}\n"
    complete = study.optuna.get_trials(states=(TrialState.COMPLETE,))
    assert [t.number for t in complete] == [0, 1, 3]
    for trial in complete:
        run = study.dir / f"trial-{trial.number:04d}"
        info = run_json(run)
        assert info["status"] == "completed" and info["epochs_completed"] == 2
        assert info["tune"]["state"] == "complete" and info["tune"]["trial"] == trial.number
        assert info["tune"]["value"] == pytest.approx(trial.value)
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["model"]["layers"][1]["Dense"]["units"] == trial.params["model.layers[1].Dense.units"]
        assert saved["training"]["optimizer"] == {
            "name": "adam", "learning_rate": trial.params["training.optimizer.learning_rate"]}
        assert saved["tune"]["space"] == yaml.safe_load(TUNE_SECTION)["tune"]["space"]
        assert (run / "eval.json").is_file() and (run / "checkpoints" / "best.keras").is_file()


def test_resume_fails_the_dead_trial_and_repeats_no_finished_one(study):
    states = {t.number: t.state for t in study.optuna.trials}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.COMPLETE, 2: TrialState.FAIL,
                      3: TrialState.COMPLETE}
    after = {p: p.stat().st_mtime_ns for p in study.dir.glob("trial-000[01]/**/*") if p.is_file()}
    assert after == study.before
    dead = run_json(study.dir / "trial-0002")
    assert dead["status"] == "interrupted" and dead["tune"] == {"trial": 2, "state": "fail"}
    assert "Warning: trial 2 was running when the study stopped; marked failed\n" in study.second.stderr
    assert f"resuming {study.dir}: 1 trial(s) to run" in study.second.stderr


def test_best_yaml_is_the_best_trial_config_and_trains(study, tmp_path):
    best = study.optuna.best_trial
    assert best.value == min(t.value for t in study.optuna.get_trials(states=(TrialState.COMPLETE,)))
    written = yaml.safe_load((study.dir / "best.yaml").read_text())
    trial_config = yaml.safe_load((study.dir / f"trial-{best.number:04d}" / "config.yaml").read_text())
    assert written == {**trial_config, "tune": None}
    assert load_config(study.dir / "best.yaml").config.tune is None
    result = dlmine("train", study.dir / "best.yaml", "--run-dir", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    assert run_json(tmp_path / "run")["status"] == "completed"


def test_the_end_shows_a_table_of_trials_and_draws_the_plots(study):
    err = study.second.stderr
    assert "trials (value: best epoch's val_loss)" in err
    for name in ("trial", "state", "value", "Dense.units", "optimizer.learning_rate", "duration"):
        assert name in err
    assert f"best: trial {study.optuna.best_trial.number}, val_loss " in err
    for name in ("history.png", "importances.png"):
        width, height = png_size((study.dir / name).read_bytes())
        assert width > 300 and height > 100


# --- pruning -------------------------------------------------------------------------------------

class FakeTrial:
    """Records what is reported; says to prune from epoch `prune_from` on."""

    def __init__(self, prune_from: int):
        self.reported: list[tuple[float, int]] = []
        self.prune_from = prune_from

    def report(self, value, step):
        self.reported.append((value, step))

    def should_prune(self):
        return self.reported[-1][1] >= self.prune_from


def test_the_pruning_callback_reports_each_epoch_and_stops_when_told():
    callback = tuning.PruneOnEpoch(FakeTrial(prune_from=2), "val_loss")
    callback.set_model(SimpleNamespace(stop_training=False))
    callback.on_epoch_end(0, {"loss": 1.0, "val_loss": 0.9})
    assert callback.pruned_after is None and not callback.model.stop_training
    callback.on_epoch_end(1, {"loss": 0.5, "val_loss": 0.4})
    assert callback.trial.reported == [(0.9, 1), (0.4, 2)]
    assert callback.pruned_after == 2 and callback.model.stop_training


def test_the_pruning_callback_names_the_metrics_it_could_use():
    callback = tuning.PruneOnEpoch(FakeTrial(prune_from=9), "val_acc", "cfg.yaml:20")
    with pytest.raises(UsageError) as caught:
        callback.on_epoch_end(0, {"loss": 1.0, "val_loss": 0.9, "val_accuracy": 0.5})
    assert str(caught.value) == ("cfg.yaml:20: tune.metric: expected a metric of the epoch logs "
                                 "(loss, val_accuracy, val_loss), received 'val_acc'; did you "
                                 "mean 'val_accuracy'?")


def test_a_pruned_trial_stops_after_the_epoch_and_its_run_says_so(tmp_path, tiny_npz, monkeypatch):
    monkeypatch.setattr(tuning, "_pruner", lambda kind: optuna.pruners.ThresholdPruner(upper=-1.0))
    cfg = write_config(tmp_path, TUNE_CONFIG)
    result = dlmine("tune", cfg, "--trials", 1, "--study-dir", tmp_path / "study")
    assert result.exit_code == 1
    assert result.stderr.endswith(f"Error: no trial of the study completed (1 trial(s)); see the "
                                  f"table above and the run.json of each trial in "
                                  f"{tmp_path / 'study'}\n")
    run = tmp_path / "study" / "trial-0000"
    info = run_json(run)
    assert info["status"] == "completed" and info["epochs_completed"] == 1
    assert info["tune"]["state"] == "pruned" and info["tune"]["pruned_after_epoch"] == 1
    assert "pruned by dlmine tune after epoch 1" in (run / "train.log").read_text()
    assert "importances.png not drawn: it needs two complete trials" in result.stderr
    assert (tmp_path / "study" / "history.png").is_file()
    assert [t.state for t in load_study(tmp_path / "study").trials] == [TrialState.PRUNED]


def test_a_metric_keras_will_not_log_is_refused_before_the_study_directory(tmp_path, tiny_npz):
    # Keras logs a metric under the name the config gives it: `accuracy` never logs `val_acc`
    cfg = write_config(tmp_path, TUNE_CONFIG.replace("metric: val_loss", "metric: val_acc"))
    result = dlmine("tune", cfg, "--study-dir", tmp_path / "study")
    assert result.exit_code == 2
    line = cfg.read_text().splitlines().index("  metric: val_acc") + 1
    assert result.stderr.endswith(
        f"  {cfg}:{line}: tune.metric: 'val_acc' is not logged by this training; did you mean "
        "'val_accuracy'? Logged: loss, accuracy, val_loss, val_accuracy, learning_rate\n")
    assert not (tmp_path / "study").exists()


def test_an_interrupted_trial_fails_and_says_how_to_continue_the_study(tmp_path, tiny_npz,
                                                                       monkeypatch):
    def interrupted(*args, **kwargs):
        raise Interrupted("interrupted after 1 complete epoch(s)")

    monkeypatch.setattr("dlmine.tune.study.train", interrupted)
    cfg = write_config(tmp_path, TUNE_CONFIG)
    result = dlmine("tune", cfg, "--study-dir", tmp_path / "study")
    assert result.exit_code == 130
    assert result.stderr.endswith("Error: interrupted during trial 0, which will not count; continue "
                                  f"the study with: dlmine tune --resume {tmp_path / 'study'}\n")
    assert [t.state for t in load_study(tmp_path / "study").trials] == [TrialState.FAIL]


def test_no_trial_starts_after_the_timeout(tmp_path, tiny_npz):
    cfg = write_config(tmp_path, TUNE_CONFIG)
    result = dlmine("tune", cfg, "--timeout", 1, "--study-dir", tmp_path / "study")
    assert result.exit_code == 0, result.output
    assert "timeout: 1 s have passed; no more trials started" in result.stderr
    assert len(load_study(tmp_path / "study").trials) == 1


# --- several processes, one study ----------------------------------------------------------------

def test_two_processes_share_one_sqlite_study(tmp_path, tiny_npz):
    # without pruning: whether the median pruner stops trial 3 depends on how far the other
    # process's trials have come, which is a race between the two processes
    cfg = write_config(tmp_path, TUNE_CONFIG + "  pruner: none\n")
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", RUN_TUNE, "tune", str(cfg), "--trials", "4",
                               "--study-dir", str(tmp_path / name), "--storage", storage,
                               "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
             for name in ("a", "b")]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, name, (out, err) in zip(procs, ("a", "b"), outputs, strict=True):
        assert proc.returncode == 0, err
        assert out == f"{tmp_path / name}\n"  # --quiet: the study directory only
    shared = load_study(tmp_path, storage)
    complete = shared.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4  # the study's --trials, both workers' together
    # a trial asked for when the other worker had just taken the last slot never trained
    assert all(t.user_attrs.get("surplus") for t in shared.trials if t not in complete)
    dirs = sorted(p.name for name in ("a", "b") for p in (tmp_path / name).glob("trial-*"))
    assert dirs == sorted(f"trial-{t.number:04d}" for t in complete)
    assert not (tmp_path / "a" / "study.db").exists()
    written = [name for name in ("a", "b") if (tmp_path / name / "best.yaml").is_file()]
    assert len(written) == 1  # by the worker that finished the study
    assert load_config(tmp_path / written[0] / "best.yaml").config.tune is None


# --- what user-testing from README found (2026-12-04) -------------------------------------------

def test_resume_without_trials_keeps_the_last_trials_given(study, tmp_path):
    """`--resume --trials 3` was the last word: a later `--resume` keeps to 3, not tune.trials."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(study.dir, copy)
    assert json.loads((copy / "study.json").read_text())["trials"] == 3
    again = dlmine("tune", "--resume", copy)
    assert again.exit_code == 0, again.output
    assert f"resuming {copy}: 0 trial(s) to run" in again.stderr
    (copy / "study.db").unlink()
    lost = dlmine("tune", "--resume", copy)
    assert (lost.exit_code, lost.stderr) == (2, (
        f"Error: {copy / 'study.db'} is missing: the study's trials cannot be found without it; "
        "start a new study with dlmine tune CONFIG\n"))


def test_a_worker_that_searches_otherwise_is_refused_before_any_trial(tmp_path, tiny_npz):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = optuna.create_study(study_name="tiny", storage=url, direction="minimize")
    first.set_user_attr(tuning.SEARCH_ATTR, {
        "metric": "val_loss", "direction": "minimize",
        "space": {"model.layers[1].Dense.units": {"choice": [16, 32]}}})
    cfg = write_config(tmp_path, TUNE_CONFIG)
    result = dlmine("tune", cfg, "--study-dir", tmp_path / "b", "--storage", url)
    assert (result.exit_code, result.stderr) == (2, (
        f"Error: the study 'tiny' in {url} was created with another search: "
        "tune.space.model.layers[1].Dense.units: {'choice': [16, 32]} there, {'choice': [4, 8]} "
        "here; tune.space.training.optimizer.learning_rate: 'absent' there, {'loguniform': "
        "[0.001, 0.1]} here; give this config the study's tune: section, or another name for a "
        "study of its own\n"))
    assert not (tmp_path / "b").exists() and len(first.trials) == 0


def test_a_space_key_under_a_section_left_null_is_searched(tmp_path, tiny_npz):
    from dlmine.model.checks import load_checked_config
    from dlmine.tune.space import check_space

    cfg = write_config(tmp_path, TUNE_CONFIG)
    loaded = load_checked_config(cfg, ["tune.space={training.early_stopping.patience: "
                                       "{int: [1, 3]}}"])
    assert loaded.config.training.early_stopping is None
    assert list(check_space(loaded)) == ["training.early_stopping.patience"]
    with pytest.raises(Exception, match="patiense: unknown key; did you mean 'patience'"):
        check_space(load_checked_config(cfg, ["tune.space={training.early_stopping.patiense: "
                                              "{int: [1, 3]}}"]))


def test_check_refuses_what_tune_would(tmp_path, tiny_npz):
    cfg = write_config(tmp_path, TUNE_CONFIG)
    result = dlmine("check", cfg, "--set", "tune.metric=val_los")
    assert result.exit_code == 2
    assert "tune.metric: 'val_los' is not logged by this training; did you mean 'val_loss'?" \
        in result.stderr
