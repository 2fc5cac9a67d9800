"""How fast dlmine answers before any training: `--help`, and `check` on a config with a typo.

Both must answer without importing Keras or its backend (the tests check that no backend
module is imported); this measures how long they take, as medians of repeated runs of a
fresh process. Usage: python benchmarks/startup.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BROKEN = """\
name: startup
dataset: {name: digits}
model:
  layers:
    - Dense: {unitz: 10, activation: softmax}
"""


def timed(args: list[str], repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dlmine", *args], capture_output=True, check=False)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    repeats = parser.parse_args().repeats
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "broken.yaml"
        config.write_text(BROKEN)
        timed(["--version"], 1)  # warm the file cache
        rows = [("python -c pass", _python_floor(repeats)),
                ("dlmine --help", timed(["--help"], repeats)),
                ("dlmine check broken.yaml (unknown argument)", timed(["check", str(config)], repeats))]
    print("| command | median seconds |\n| --- | --- |")
    for name, value in rows:
        print(f"| `{name}` | {value:.3f} |")


def _python_floor(repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=False)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


if __name__ == "__main__":
    main()
