"""Peak memory of `dlmine train` on a folder of .npz shards as the data grow 10x.

Writes MNIST's training images, repeated, as shards of `--shard-rows` samples: a 1x
folder (`--base` samples) and a 10x folder, plus the same data as one `.npz` file each.
Trains one epoch of a small MLP on each through `dlmine train` (a subprocess) and reads
its peak RSS (`os.wait4`). Sharded data are read one shard at a time, so their peak should
stay flat; a single file is loaded whole, so its peak grows with the data.

    .venv/bin/python benchmarks/streaming.py            # ~4 min on 2 cores; updates docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from docblock import write_block  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- streaming:begin -->", "<!-- streaming:end -->"
CONFIG = """\
name: streaming
seed: 1
dataset: {{name: npz, path: {path}, validation_split: null}}
preprocessing: {{rescale: 0.00392156862745098, reshape: [784]}}
model:
  layers:
    - Dense: {{units: 64, activation: relu}}
    - Dense: {{units: 10, activation: softmax}}
training: {{epochs: 1, batch_size: 512}}
"""


def write_data(folder: Path, samples: int, shard_rows: int, x: np.ndarray, y: np.ndarray) -> None:
    """`folder/shards/part-K.npz` and `folder/whole.npz`, `samples` rows of MNIST repeated."""
    (folder / "shards").mkdir(parents=True)
    index = np.arange(samples) % len(x)
    test = {"x_test": x[:1000], "y_test": y[:1000]}
    for k, start in enumerate(range(0, samples, shard_rows)):
        rows = index[start:start + shard_rows]
        held = slice(0, 1000 if k == 0 else 0)  # the test set in the first shard, none after
        np.savez(folder / "shards" / f"part-{k:04d}.npz", x_train=x[rows], y_train=y[rows],
                 x_test=test["x_test"][held], y_test=test["y_test"][held])
    np.savez(folder / "whole.npz", x_train=x[index], y_train=y[index], **test)


def run(config: Path) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dlmine", "train", str(config), "--quiet",
                             "--run-dir", str(config.with_suffix(".run"))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"dlmine failed on {config}:\n{out}\n{err}")
    run_dir = config.with_suffix(".run")
    metrics = json.loads((run_dir / "eval.json").read_text())["metrics"]
    samples = json.loads((run_dir / "run.json").read_text())["samples"]["train"]
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "wall_s": round(wall, 1),
            "train_samples": samples, "accuracy": round(metrics["accuracy"], 4)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=60000, help="samples of the 1x data")
    parser.add_argument("--shard-rows", type=int, default=10000)
    parser.add_argument("--output", type=Path, default=DOC, help="document to update; - for none")
    args = parser.parse_args(argv)
    data_dir = Path(os.environ.get("DLMINE_DATA_DIR", ROOT.parent / "shared" / "data"))
    with np.load(data_dir / "mnist.npz") as npz:
        x, y = npz["x_train"], npz["y_train"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="dlmine-streaming-") as tmp:
        for scale in (1, 10):
            folder = Path(tmp) / f"x{scale}"
            write_data(folder, args.base * scale, args.shard_rows, x, y)
            disk = sum(p.stat().st_size for p in (folder / "shards").iterdir())
            for layout, path in (("shards", folder / "shards"), ("one file", folder / "whole.npz")):
                config = folder / f"{layout.replace(' ', '_')}.yaml"
                config.write_text(CONFIG.format(path=path))
                result = {"scale": scale, "layout": layout, "disk_mb": disk / 2**20, **run(config)}
                print(json.dumps(result), file=sys.stderr)
                rows.append(result)
    section = document(rows, args)
    print(section)
    if str(args.output) != "-":
        write_block(section, BEGIN, END, doc=args.output)
        print(f"updated {args.output}", file=sys.stderr)


def document(rows: list[dict], args) -> str:
    peak = {(r["scale"], r["layout"]): r["peak_rss_mb"] for r in rows}
    lines = [BEGIN, "## Data larger than memory: a folder of .npz shards", "",
             f"`benchmarks/streaming.py`, {time.strftime('%Y-%m-%d')}, "
             f"{platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs. One epoch of a 784-64-10 MLP (batch 512) on MNIST's images "
             f"repeated: {args.base} samples (1x) and {10 * args.base} (10x), as shards of "
             f"{args.shard_rows} samples (`dataset: {{name: npz, path: FOLDER}}`) and as one `.npz`. "
             "Peak RSS of the whole `dlmine train` process (`os.wait4`).", "",
             "| data | layout | on disk (MiB) | training samples | peak RSS (MiB) | wall (s) "
             "| test accuracy |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['scale']}x | {r['layout']} | {r['disk_mb']:.0f} | {r['train_samples']} | "
                     f"{r['peak_rss_mb']:.0f} | {r['wall_s']} | {r['accuracy']} |")
    lines += ["", f"Peak memory 10x / 1x: shards {peak[(10, 'shards')] / peak[(1, 'shards')]:.2f}, "
              f"one file {peak[(10, 'one file')] / peak[(1, 'one file')]:.2f}.", END]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
