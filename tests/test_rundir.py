"""dlmine.rundir: atomic writes, run directory creation and reading, run.json, the lock."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from dlmine import rundir
from dlmine.errors import DlmineError, UsageError
from dlmine.rundir import RunDir, atomic_copy, atomic_save_model, atomic_write
from tests.conftest import ROOT, python

NO_SPACE = OSError(28, "No space left on device")


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def not_written(path: Path, reason: str) -> str:
    return (f"cannot write {path}: {reason}; the previous version of the file, if any, is "
            "intact")


def fail_replace(*args, **kwargs):
    raise OSError(28, "No space left on device")


def exists_message(path: Path) -> str:
    return f"run directory {path} already exists; dlmine never overwrites a run. "


def train_options() -> set[str]:
    from dlmine.cli import main

    return {opt for param in main.get_command(None, "train").params for opt in param.opts
            if opt.startswith("--")}


def assert_refuses_existing(message: str, path: Path) -> None:
    """The exact refusal; every option it suggests must exist on `dlmine train`."""
    assert message.startswith(exists_message(path) + "Choose another --run-dir"), message
    suggested = set(re.findall(r"--[a-z][a-z-]*", message))
    assert suggested <= train_options(), (
        f"the message suggests {sorted(suggested - train_options())}, which `dlmine train` "
        "does not have")


# --- atomic_write ------------------------------------------------------------------------------

def test_atomic_write_text_and_bytes(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write(path, "héllo\n")
    assert path.read_bytes() == "héllo\n".encode()
    atomic_write(path, b"\x00\x01new")
    assert path.read_bytes() == b"\x00\x01new"
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]  # no temporary file left behind


def test_atomic_write_mode_follows_umask(tmp_path):
    path = tmp_path / "out.json"
    atomic_write(path, "{}")
    reference = tmp_path / "reference"
    with open(reference, "w") as handle:
        handle.write("{}")
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o666 & ~current_umask()
    assert mode == stat.S_IMODE(reference.stat().st_mode)  # what open() gives
    if not current_umask() & 0o044:
        assert mode != 0o600  # not mkstemp's private mode


def test_atomic_write_failure_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    path.write_text("old\n")
    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(DlmineError) as caught:
        atomic_write(path, "new\n")
    monkeypatch.undo()
    assert type(caught.value) is DlmineError and caught.value.exit_code == 1
    assert str(caught.value) == not_written(path, "No space left on device")
    assert path.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["run.json"]


def test_atomic_write_failure_without_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "new.txt"
    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(DlmineError) as caught:
        atomic_write(path, "data")
    assert str(caught.value) == not_written(path, "No space left on device")
    assert os.listdir(tmp_path) == []


def test_atomic_write_into_missing_folder(tmp_path):
    path = tmp_path / "missing" / "out.txt"
    with pytest.raises(DlmineError) as caught:
        atomic_write(path, "data")
    assert str(caught.value) == not_written(path, "No such file or directory")


# --- atomic_save_model -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    return model


def test_atomic_save_model_loads_back(tmp_path, tiny_model):
    import keras

    path = tmp_path / "model.keras"
    atomic_save_model(tiny_model, path)
    assert sorted(os.listdir(tmp_path)) == ["model.keras"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~current_umask()
    loaded = keras.saving.load_model(path)
    x = np.arange(8, dtype="float32").reshape(2, 4)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), tiny_model.predict(x, verbose=0),
                               rtol=1e-6)
    for saved, original in zip(loaded.get_weights(), tiny_model.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, original)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("boom")],
                         ids=["oserror", "other"])
def test_atomic_save_model_failure_keeps_previous_file(tmp_path, tiny_model, monkeypatch, error):
    path = tmp_path / "model.keras"
    atomic_save_model(tiny_model, path)
    before = path.read_bytes()

    def broken_save(self, filepath, *args, **kwargs):
        Path(filepath).write_bytes(b"PK\x03\x04 half a model")
        raise error

    monkeypatch.setattr(type(tiny_model), "save", broken_save)
    expected = DlmineError if isinstance(error, OSError) else RuntimeError
    with pytest.raises(expected) as caught:
        atomic_save_model(tiny_model, path)
    if expected is DlmineError:
        assert str(caught.value) == not_written(path, "No space left on device")
    else:
        assert caught.value is error
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.keras"]


def test_atomic_save_model_copies_are_own_files_in_place_before_the_path(tmp_path, tiny_model,
                                                                        monkeypatch):
    last, best = tmp_path / "last.keras", tmp_path / "best.keras"
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(rundir.os, "replace",
                        lambda src, dst: (replaced.append(Path(dst).name), real_replace(src, dst)))
    atomic_save_model(tiny_model, last, copies=(best,))
    assert replaced == ["best.keras", "last.keras"]
    assert sorted(os.listdir(tmp_path)) == ["best.keras", "last.keras"]
    assert best.read_bytes() == last.read_bytes()
    assert best.stat().st_ino != last.stat().st_ino
    assert stat.S_IMODE(best.stat().st_mode) == 0o666 & ~current_umask()


def test_atomic_save_model_copy_failure_keeps_both_previous_files(tmp_path, tiny_model,
                                                                  monkeypatch):
    last, best = tmp_path / "last.keras", tmp_path / "best.keras"
    last.write_bytes(b"old last")
    best.write_bytes(b"old best")

    def no_space(*args, **kwargs):
        raise NO_SPACE

    monkeypatch.setattr(rundir.shutil, "copyfile", no_space)
    with pytest.raises(DlmineError) as caught:
        atomic_save_model(tiny_model, last, copies=(best,))
    assert str(caught.value) == not_written(best, "No space left on device")
    assert (last.read_bytes(), best.read_bytes()) == (b"old last", b"old best")
    assert sorted(os.listdir(tmp_path)) == ["best.keras", "last.keras"]


def test_atomic_copy_writes_the_same_bytes_through_a_temporary(tmp_path):
    source, path = tmp_path / "last.keras", tmp_path / "model.keras"
    source.write_bytes(b"PK a model")
    path.write_bytes(b"old")
    atomic_copy(source, path)
    assert path.read_bytes() == b"PK a model"
    assert sorted(os.listdir(tmp_path)) == ["last.keras", "model.keras"]


def test_atomic_save_model_into_missing_folder_is_a_dlmine_error(tmp_path, tiny_model):
    # as atomic_write: a folder that cannot take the file is the user's problem, not a crash
    path = tmp_path / "missing" / "model.keras"
    with pytest.raises(DlmineError) as caught:
        atomic_save_model(tiny_model, path)
    assert str(caught.value) == not_written(path, "No such file or directory")


# --- RunDir.create / open ----------------------------------------------------------------------

def test_create_refuses_existing_empty_folder(tmp_path):
    existing = tmp_path / "run"
    existing.mkdir()
    with pytest.raises(UsageError) as caught:
        RunDir.create(existing, tmp_path / "runs", "tiny")
    assert caught.value.exit_code == 2
    assert_refuses_existing(str(caught.value), existing)
    assert os.listdir(existing) == []
    assert not (tmp_path / "runs").exists()


def test_create_refuses_existing_folder_and_leaves_it_untouched(tmp_path):
    existing = tmp_path / "run"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine\n")
    with pytest.raises(UsageError) as caught:
        RunDir.create(existing, tmp_path / "runs", "tiny")
    assert str(caught.value).startswith(exists_message(existing))
    assert os.listdir(existing) == ["notes.txt"]
    assert (existing / "notes.txt").read_text() == "mine\n"


def test_create_refuses_a_file_and_a_dangling_symlink(tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    for path in (file, link):
        with pytest.raises(UsageError) as caught:
            RunDir.create(path, tmp_path / "runs", "tiny")
        assert str(caught.value).startswith(exists_message(path))
    assert file.read_text() == "x" and link.is_symlink() and not (tmp_path / "nowhere").exists()


def test_create_explicit_path_makes_parents_and_checkpoints(tmp_path):
    path = tmp_path / "a" / "b" / "run"
    run = RunDir.create(path, tmp_path / "runs", "tiny")
    assert run.path == path
    assert (path / "checkpoints").is_dir()
    assert sorted(os.listdir(path)) == ["checkpoints"]
    assert run / "run.json" == path / "run.json"


def test_create_default_path_is_name_and_time(tmp_path):
    root = tmp_path / "runs"
    before = datetime.now().replace(microsecond=0)
    run = RunDir.create(None, root, "tiny")
    after = datetime.now()
    assert run.path.parent == root
    match = re.fullmatch(r"tiny-(\d{8}-\d{6})", run.path.name)
    assert match, run.path.name
    assert before <= datetime.strptime(match.group(1), "%Y%m%d-%H%M%S") <= after
    assert (run.path / "checkpoints").is_dir()


def test_create_default_twice_in_the_same_second(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt, *args: "20240102-030405")
    first = RunDir.create(None, root, "tiny")
    second = RunDir.create(None, root, "tiny")
    third = RunDir.create(None, root, "tiny")
    assert len({first.path, second.path, third.path}) == 3
    assert first.path.name == "tiny-20240102-030405"
    assert all(r.path.parent == root and r.path.name.startswith("tiny-20240102-030405")
               for r in (second, third))
    assert all((r.path / "checkpoints").is_dir() for r in (first, second, third))


def test_create_default_back_to_back_never_share_a_folder(tmp_path):
    root = tmp_path / "runs"
    paths = [RunDir.create(None, root, "tiny").path for _ in range(3)]
    assert len(set(paths)) == 3
    assert sorted(os.listdir(root)) == sorted(p.name for p in paths)


def test_open_without_config_yaml(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    with pytest.raises(UsageError) as caught:
        RunDir.open(folder)
    assert caught.value.exit_code == 2
    assert str(caught.value) == f"{folder} is not a dlmine run directory: it has no config.yaml"


def test_open_missing_folder_and_valid_folder(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(UsageError) as caught:
        RunDir.open(missing)
    assert str(caught.value) == f"run directory not found: {missing}"
    run = RunDir.create(tmp_path / "run", tmp_path, "tiny")
    run.write("config.yaml", "name: tiny\n")
    assert RunDir.open(tmp_path / "run").path == tmp_path / "run"


# --- run.json ----------------------------------------------------------------------------------

def test_update_run_merges_fields(tmp_path):
    run = RunDir.create(tmp_path / "run", tmp_path, "tiny")
    assert run.update_run(status="running", epochs_completed=0) == {
        "status": "running", "epochs_completed": 0}
    merged = run.update_run(epochs_completed=np.int64(3), best={"val_loss": np.float32(0.5)})
    expected = {"status": "running", "epochs_completed": 3, "best": {"val_loss": 0.5}}
    assert merged == expected
    assert run.read_json("run.json") == expected
    assert json.loads((run / "run.json").read_text()) == expected
    assert sorted(os.listdir(run.path)) == ["checkpoints", "run.json"]


def test_read_json_damaged_and_missing(tmp_path):
    run = RunDir.create(tmp_path / "run", tmp_path, "tiny")
    with pytest.raises(DlmineError) as caught:
        run.read_json("run.json")
    assert str(caught.value) == f"{run / 'run.json'} is missing"
    (run / "run.json").write_text('{"status": "runn')
    with pytest.raises(DlmineError) as caught:
        run.read_json("run.json")
    assert str(caught.value) == (f"{run / 'run.json'} is damaged: Unterminated string starting "
                                 "at: line 1 column 12 (char 11)")
    (run / "run.json").write_text("")
    with pytest.raises(DlmineError) as caught:
        run.update_run(status="failed")
    assert str(caught.value) == (f"{run / 'run.json'} is damaged: Expecting value: line 1 "
                                 "column 1 (char 0)")
    assert (run / "run.json").read_text() == ""  # a damaged run.json is not overwritten


# --- the lock ----------------------------------------------------------------------------------

HOLD_LOCK = """\
import sys, time
from dlmine.rundir import RunDir
with RunDir(sys.argv[1]).lock():
    print("locked", flush=True)
    time.sleep(60)
"""


def in_use(path: Path, pid: int) -> str:
    return (f"{path} is in use by another dlmine process (pid {pid} on {socket.gethostname()}); "
            "wait for it, or stop it")


def owner(pid: int) -> str:
    """What `.lock` holds: the pid and the host."""
    return f"{pid} {socket.gethostname()}\n"


def dead_pid() -> int:
    proc = subprocess.Popen([python(), "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_held_by_another_process(tmp_path):
    run = RunDir.create(tmp_path / "run", tmp_path, "tiny")
    lock = run / ".lock"
    holder = subprocess.Popen([python(), "-c", HOLD_LOCK, str(run.path)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (lock.exists() and lock.read_text() == owner(holder.pid)):
            if holder.poll() is not None:
                pytest.fail(f"the lock holder exited: {holder.communicate()[1]}")
            assert time.monotonic() < deadline, "the lock holder never took the lock"
            time.sleep(0.05)
        with pytest.raises(UsageError) as caught:
            with run.lock():
                pytest.fail("took a lock that another live process holds")
        assert caught.value.exit_code == 2
        assert str(caught.value) == in_use(run.path, holder.pid)
        assert lock.read_text() == owner(holder.pid)  # the holder's lock is left alone
    finally:
        holder.kill()
        holder.wait()
    # killed with -9, it left its lock behind: a dead owner's lock is taken over
    assert lock.read_text() == owner(holder.pid)
    with run.lock():
        assert lock.read_text() == owner(os.getpid())
    assert not lock.exists()


def test_lock_file_of_a_live_pid_is_refused(tmp_path):
    run = RunDir.create(tmp_path / "run", tmp_path, "tiny")
    sleeper = subprocess.Popen([python(), "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(str(sleeper.pid))
        with pytest.raises(UsageError) as caught:
            with run.lock():
                pass
        assert str(caught.value) == in_use(run.path, sleeper.pid)
        assert (run / ".lock").read_text() == str(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_lock_is_reentrant_within_one_process(tmp_path):
    # resume takes the lock before reading the state, then trains under the same lock
    run = RunDir.create(tmp_path / "run", tmp_path, "tiny")
    with run.lock():
        with RunDir(run.path).lock():
            assert (run / ".lock").read_text() == owner(os.getpid())
        assert (run / ".lock").exists()  # the inner holder does not release it
    assert not (run / ".lock").exists()


def test_lock_of_a_dead_pid_is_taken_over(tmp_path):
    run = RunDir.create(tmp_path / "run", tmp_path, "tiny")
    (run / ".lock").write_text(str(dead_pid()))
    with run.lock():
        assert (run / ".lock").read_text() == owner(os.getpid())
    assert not (run / ".lock").exists()


def test_lock_is_removed_when_the_block_raises(tmp_path):
    run = RunDir.create(tmp_path / "run", tmp_path, "tiny")
    with pytest.raises(ValueError):
        with run.lock():
            assert (run / ".lock").read_text() == owner(os.getpid())
            raise ValueError("training failed")
    assert not (run / ".lock").exists()
    assert sorted(os.listdir(run.path)) == ["checkpoints"]


# --- end to end --------------------------------------------------------------------------------

def test_cli_train_refuses_existing_run_dir(cli, tiny_config, tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("precious\n")
    runs = tmp_path / "runs"
    result = cli("train", tiny_config, "--run-dir", existing, "--runs-root", runs)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(f"Error: {exists_message(existing)}"), result.stderr
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1
    assert_refuses_existing(result.stderr.removeprefix("Error: "), existing)
    assert "Traceback" not in result.output
    assert os.listdir(existing) == ["keep.txt"]
    assert (existing / "keep.txt").read_text() == "precious\n"
    assert not runs.exists()
