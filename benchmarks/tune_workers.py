"""Trials per hour of one `dlmine tune` worker against three on one study, on this machine.

Starts a throwaway PostgreSQL server (`tests/postgres_server.py`, as the tests do), then runs
`configs/digits_cnn_tune.yaml` (shortened: `--set training.epochs=E`, no pruner, so every
trial does the same work) twice: one worker reaching `--trials N`, then three workers
sharing a second study of `N` trials. Reports the wall seconds from the first start to the
last exit (process start-up included), the trials per hour that makes, and the mean
seconds of one trial, and regenerates the tune-workers section of `docs/benchmarks.md`.

    .venv/bin/python benchmarks/tune_workers.py            # ~2 min on 2 cores
    .venv/bin/python benchmarks/tune_workers.py --no-write
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from docblock import write_block  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BEGIN, END = "<!-- tune-workers:begin -->", "<!-- tune-workers:end -->"
CONFIG = "configs/digits_cnn_tune.yaml"


def study(url: str, name: str, workers: int, trials: int, epochs: int, folder: Path) -> dict:
    """`workers` processes on one study of `trials` trials: wall seconds and trial seconds."""
    import optuna

    command = [sys.executable, "-m", "dlmine", "tune", CONFIG, "--trials", str(trials),
               "--storage", url, "--quiet", "--set", f"name={name}",
               "--set", f"training.epochs={epochs}", "--set", "tune.pruner=none"]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    started = time.perf_counter()
    procs = [subprocess.Popen([*command, "--study-dir", str(folder / f"{name}-{i}")], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(workers)]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"a worker of {name} failed:\n{err}")
    wall = time.perf_counter() - started
    done = optuna.load_study(study_name=name, storage=url).get_trials(
        states=(optuna.trial.TrialState.COMPLETE,))
    per_trial = sum(t.duration.total_seconds() for t in done) / len(done)
    return {"workers": workers, "trials": len(done), "wall": wall,
            "per_hour": len(done) / wall * 3600, "per_trial": per_trial}


def section(rows: list[dict], trials: int, epochs: int) -> str:
    one, three = rows
    lines = [
        BEGIN,
        "## Tuning with several workers (`python benchmarks/tune_workers.py`)",
        "",
        f"`{CONFIG}` with `--set training.epochs={epochs}` and no pruner, {trials} trials per "
        "study, stored in a PostgreSQL server on this machine (127.0.0.1); the TensorFlow "
        "backend. Wall seconds from the first worker's start to the last one's exit (start-up "
        "included); a trial's seconds are Optuna's (`datetime_complete - datetime_start`).",
        "",
        "| workers | complete trials | wall s | trials per hour | s per trial |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['workers']} | {row['trials']} | {row['wall']:.0f} | "
                     f"{row['per_hour']:.0f} | {row['per_trial']:.1f} |")
    lines += [
        "",
        f"Three workers: {three['per_hour'] / one['per_hour']:.2f}x the trials per hour of one. "
        f"Machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), which "
        "other people's jobs may have used meanwhile (it ran under `nice -n 10`), Python "
        f"{platform.python_version()}, {datetime.date.today()}. Three TensorFlow processes on "
        "2 cores oversubscribe them (each has its own thread pools), so each trial takes several "
        "times longer and the three start-ups overlap: expect no gain on such a machine; the "
        "point of the test suite's three-worker study is that it is correct, and the speed-up "
        "comes with a core (or a host) per worker.",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    from tests.postgres_server import throwaway_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    with throwaway_server() as url, tempfile.TemporaryDirectory() as tmp:
        rows = [study(url, f"bench{n}", n, args.trials, args.epochs, Path(tmp)) for n in (1, 3)]
    text = section(rows, args.trials, args.epochs)
    print(text)
    if not args.no_write:
        write_block(text, BEGIN, END, after="<!-- end of explain-vs-sklearn -->")


if __name__ == "__main__":
    main()
