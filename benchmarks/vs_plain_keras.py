"""dlmine against the same model as a plain Keras script, alternated in one run.

Runs, alternating A B C A B C ... `--repeats` times each:
    A  `python -m dlmine train configs/mnist_cnn.yaml --set dataset.limit=N
       --set training.epochs=E --run-dir TMP --quiet`
    B  `python benchmarks/plain_keras_mnist.py` (fit on arrays, Keras' own shuffling)
    C  the same script with `--order epoch-keyed` (dlmine's per-epoch order: like for like)
and measures, for each process: the whole-process wall time (from `Popen` to exit), peak RSS
and CPU time (user + system of the child itself, all its threads, from `os.wait4`), the time
inside the training epochs, samples/s, and the test accuracy. It also times `dlmine --help`
and `dlmine check` on broken configs (and says whether they imported TensorFlow or JAX), runs
`input_pipeline.py`, prints the tables and ratios, and regenerates `docs/benchmarks.md`.

Two works (`--work`): `short` (the default: `--limit` samples, `--epochs` epochs, 20,000 and
2) and `long` (configs/mnist_cnn.yaml as a user trains it: all 60,000 training samples, 54,000
/ 6,000, `--long-epochs` epochs, 15; about 3 minutes per process on 2 cores), or `both`. Each
work's variants alternate; for each work the medians of wall and CPU seconds and the ratios
dlmine / plain are printed and checked against the targets of issue 11 (`WORK_TARGETS`).
The document is regenerated from the short work (with a section on every work measured).

Example:
    DLMINE_DATA_DIR=../shared/data python benchmarks/vs_plain_keras.py --repeats 3
    DLMINE_DATA_DIR=../shared/data python benchmarks/vs_plain_keras.py --work long --repeats 1 \
        --no-keyed --pipeline-rounds 0 --output -
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
CONFIG = "configs/mnist_cnn.yaml"
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) - .* - ([0-9.]+)s$")
TARGETS = {"wall": 1.05, "rss": 1.2}
# Issue 11: medians of alternated runs, dlmine / plain (the idiomatic script), per work.
WORK_TARGETS = {"short": {"wall_s": 0.97, "cpu_s": 1.03}, "long": {"wall_s": 1.00, "cpu_s": 1.02}}
# From this line on, docs/benchmarks.md is written by hand (the GPU check) and kept on rewrite.
KEEP_MARK = "<!-- not generated: vs_plain_keras.py keeps this line and what follows -->"
NAMES = {"dlmine": "dlmine train", "plain": "plain Keras, fit(shuffle=True)",
         "plain-keyed": "plain Keras, dlmine's epoch order"}


# --- measuring one process ----------------------------------------------------------------------

def busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine so far (all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def measure(cmd: list[str], env: dict) -> dict:
    """Run `cmd`; its wall time, peak RSS and CPU time, and the CPU the rest of the machine used.

    Raises:
        RuntimeError: the command failed (with the end of its stderr).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        busy = busy_seconds()
        started = time.perf_counter()
        process = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        busy = busy_seconds() - busy
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {process.returncode}:\n{stderr[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_s": wall, "rss_mb": usage.ru_maxrss / 1024, "cpu_s": cpu,
            "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
            "others_cores": max(0.0, (busy - cpu) / wall), "stdout": stdout, "stderr": stderr}


def works(args) -> dict:
    """The works `--work` asks for: {name: {"limit": samples or None (all), "epochs": E}}."""
    every = {"short": {"limit": args.limit, "epochs": args.epochs},
             "long": {"limit": args.long_limit or None, "epochs": args.long_epochs}}
    names = ["short", "long"] if args.work == "both" else [args.work]
    return {name: every[name] for name in names}


def run_dlmine(args, env: dict, workdir: Path, index: int, work: dict | None = None) -> dict:
    work = work or {"limit": args.limit, "epochs": args.epochs}
    run_dir = workdir / f"dlmine-{index}"
    limit = [] if work["limit"] is None else ["--set", f"dataset.limit={work['limit']}"]
    cmd = [sys.executable, "-m", "dlmine", "train", CONFIG, *limit,
           "--set", f"training.epochs={work['epochs']}", "--run-dir", str(run_dir), "--quiet"]
    result = measure(cmd, env)
    info = json.loads((run_dir / "run.json").read_text())
    epochs = [float(m.group(3)) for line in (run_dir / "train.log").read_text().splitlines()
              if (m := EPOCH_LINE.match(line.strip()))]
    train_samples = info["samples"]["train"]
    fit = sum(epochs)
    result.update(fit_s=fit, epoch_s=epochs, train_samples=train_samples,
                  samples_per_s=train_samples * len(epochs) / fit,
                  accuracy=info["final_metrics"]["accuracy"], loss=info["final_metrics"]["loss"],
                  session_s=info.get("duration_s"), best_epoch=(info.get("best") or {}).get("epoch"))
    return result


def run_plain(args, env: dict, workdir: Path, order: str, work: dict | None = None) -> dict:
    work = work or {"limit": args.limit, "epochs": args.epochs}
    limit = 60000 if work["limit"] is None else work["limit"]  # MNIST has 60,000: all of them
    cmd = [sys.executable, str(BENCH / "plain_keras_mnist.py"), "--limit", str(limit),
           "--epochs", str(work["epochs"]), "--order", order]
    result = measure(cmd, env)
    report = json.loads(result["stdout"].strip().splitlines()[-1])
    fit = sum(report["epoch_s"])
    result.update(fit_s=fit, epoch_s=report["epoch_s"], train_samples=report["train_samples"],
                  samples_per_s=report["train_samples"] * report["epochs"] / fit,
                  accuracy=report["test_accuracy"], loss=report["test_loss"],
                  whole_fit_s=report["fit_s"], script_wall_s=report["wall_s"])
    return result


# --- start-up -----------------------------------------------------------------------------------

BROKEN_SCHEMA = """\
name: broken
sed: 42
dataset:
  name: mnist
model:
  layers:
    - Flatten
    - Dense: {units: 10, activation: softmax}
training:
  epochs: ten
"""
BROKEN_LAYER = """\
name: broken
dataset:
  name: mnist
preprocessing: {rescale: 1/255, add_channel_axis: true}
model:
  layers:
    - Conv2D: {filters: 32, kernel_sise: 3}
    - Flatten
    - Dense: {units: 10, activation: softmax}
"""


IMPORTS_PROBE = """\
import atexit, os, runpy, sys
def report():
    with open(os.environ["DLMINE_BENCH_IMPORTS"], "w") as out:
        out.write(" ".join(m for m in ("tensorflow", "jax", "keras") if m in sys.modules))
atexit.register(report)
sys.argv[0] = "dlmine"
runpy.run_module("dlmine", run_name="__main__")
"""


def heavy_imports(args: list[str], env: dict, workdir: Path) -> list[str]:
    """Which of tensorflow, jax and keras `dlmine ARGS` has imported when it exits.

    (`python -X importtime` cannot tell: dlmine sends stderr to /dev/null while Keras imports.)
    """
    out = workdir / "imports.txt"
    out.unlink(missing_ok=True)
    subprocess.run([sys.executable, "-c", IMPORTS_PROBE, *args], env=dict(
        env, DLMINE_BENCH_IMPORTS=str(out)), cwd=ROOT, capture_output=True)
    return out.read_text().split() if out.exists() else ["?"]


def startup(env: dict, workdir: Path, times: int = 5) -> list[dict]:
    """`dlmine --help` and `dlmine check` on broken configs: median wall time and imports."""
    schema, layer = workdir / "broken_schema.yaml", workdir / "broken_layer.yaml"
    schema.write_text(BROKEN_SCHEMA)
    layer.write_text(BROKEN_LAYER)
    base = [sys.executable, "-m", "dlmine"]
    cases = [("dlmine --help", base + ["--help"], 0),
             ("dlmine check (unknown key, wrong type)", base + ["check", str(schema)], 2),
             ("dlmine check (misspelt layer argument)", base + ["check", str(layer)], 2),
             ("dlmine check configs/mnist_cnn.yaml (valid)", base + ["check", CONFIG], 0)]
    rows = []
    for label, cmd, expected in cases:
        walls, first_line, code = [], "", None
        for _ in range(times if cmd[-1] == "--help" else max(1, times // 2)):
            started = time.perf_counter()
            done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
            walls.append(time.perf_counter() - started)
            code = done.returncode
            first_line = (done.stderr or done.stdout).strip().splitlines()[0] if (
                done.stderr or done.stdout).strip() else ""
        rows.append({"command": label, "median_s": statistics.median(walls),
                     "runs_s": walls, "exit": code, "expected_exit": expected,
                     "imports": heavy_imports(cmd[3:], env, workdir),
                     "first_line": first_line[:140]})
    return rows


# --- summary ------------------------------------------------------------------------------------

def medians(runs: list[dict]) -> dict:
    keys = ("wall_s", "fit_s", "samples_per_s", "rss_mb", "cpu_s", "others_cores", "accuracy")
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def ratios(a: dict, b: dict) -> dict:
    return {k: a[k] / b[k] for k in ("wall_s", "fit_s", "samples_per_s", "rss_mb", "cpu_s")}


def machine(args) -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem_kb = 0

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "dlmine"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "ram_gib": round(mem_kb / 2**20, 1), "os": platform.platform(),
            "python": platform.python_version(), "keras": version("keras"),
            "tensorflow": version("tensorflow"), "jax": version("jax"), "numpy": version("numpy"),
            "dlmine": version("dlmine"), "backend": args.backend,
            "commit": commit + (" (dlmine/ modified)" if dirty else ""),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "loadavg_before": Path("/proc/loadavg").read_text().split()[:3]}


def print_tables(runs: list[dict], summary: dict, rel: dict, work: str = "short") -> None:
    print(f"\n== {work} work")
    print(f"{'run':<4} {'variant':<12} {'wall s':>7} {'fit s':>6} {'samples/s':>9} {'RSS MB':>7} "
          f"{'CPU s':>7} {'user s':>7} {'sys s':>6} {'others':>6} {'accuracy':>8}")
    for r in runs:
        print(f"{r['index']:<4} {r['variant']:<12} {r['wall_s']:>7.2f} {r['fit_s']:>6.2f} "
              f"{r['samples_per_s']:>9.0f} {r['rss_mb']:>7.0f} {r['cpu_s']:>7.2f} "
              f"{r.get('user_s', float('nan')):>7.2f} {r.get('sys_s', float('nan')):>6.2f} "
              f"{r['others_cores']:>6.2f} {r['accuracy']:>8.4f}")
    print("medians")
    for variant, m in summary.items():
        print(f"  {variant:<12} wall {m['wall_s']:.2f}s  CPU {m['cpu_s']:.2f}s  fit {m['fit_s']:.2f}s"
              f"  {m['samples_per_s']:.0f} samples/s  RSS {m['rss_mb']:.0f} MB"
              f"  accuracy {m['accuracy']:.4f}")
    for against, r in rel.items():
        print(f"dlmine / {against}: wall {r['wall_s']:.3f}  CPU {r['cpu_s']:.3f}  fit {r['fit_s']:.3f}"
              f"  samples/s {r['samples_per_s']:.3f}  RSS {r['rss_mb']:.3f}")
    for key, target in WORK_TARGETS.get(work, {}).items():
        if "plain" in rel:
            measured = rel["plain"][key]
            print(f"target {work} {key.removesuffix('_s')} dlmine/plain <= {target:.2f}: "
                  f"{measured:.3f} {'met' if measured <= target else 'NOT met'}")


# --- the document -------------------------------------------------------------------------------

def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def document(args, facts: dict, runs, summary, rel, start_rows, pipeline,
             by_work: dict | None = None) -> str:
    plain, dl = summary["plain"], summary["dlmine"]
    wall_ok = rel["plain"]["wall_s"] <= TARGETS["wall"]
    rss_ok = rel["plain"]["rss_mb"] <= TARGETS["rss"]
    keyed = [r["accuracy"] for r in runs if r["variant"] == "plain-keyed"]
    same_acc = bool(keyed) and all(r["accuracy"] == keyed[0] for r in runs
                                   if r["variant"] in ("dlmine", "plain-keyed"))
    out = [
        "# Benchmarks",
        "",
        "<!-- generated by `python benchmarks/vs_plain_keras.py`; edit the script, not this file -->",
        "",
        "dlmine against the same model written as a plain Keras 3 script "
        "(`benchmarks/plain_keras_mnist.py`): the MNIST CNN of `configs/mnist_cnn.yaml`, the first "
        f"{args.limit} training samples (10% held out for validation, stratified, seeded), "
        f"{args.epochs} epochs, batch 128, Adam, seed 42, then the 10,000 test images. "
        f"Regenerate with `python benchmarks/vs_plain_keras.py --repeats {args.repeats}` "
        f"(`--limit`, `--epochs`, `--backend tensorflow|jax`, `--pipeline-rounds`).",
        "",
        "## Machine",
        "",
        *table(["", ""], [
            ["CPU", f"{facts['cpu']} ({facts['cores']} cores, {facts['usable_cores']} usable)"],
            ["RAM", f"{facts['ram_gib']} GiB"], ["OS", facts["os"]],
            ["Python", facts["python"]], ["Keras", f"{facts['keras']} (backend {facts['backend']})"],
            ["TensorFlow", facts["tensorflow"]], ["JAX", facts["jax"]], ["numpy", facts["numpy"]],
            ["dlmine", f"{facts['dlmine']} at commit {facts['commit']}"],
            ["date", facts["date"]],
            ["load average before / after", " ".join(facts["loadavg_before"]) + " / "
             + " ".join(facts.get("loadavg_after", ["(not recorded)"]))]]),
        "",
        "The machine is shared: other work may run on the same cores during a benchmark. The "
        "`others` column is the CPU the rest of the machine used while each process ran "
        "(busy time from `/proc/stat` minus the process' own CPU time, in cores); runs with a "
        "high figure are slowed by it, which is why the runs alternate and medians are compared.",
        "",
        "## dlmine against plain Keras",
        "",
        "Variants, alternated in this order:",
        "",
        f"- `dlmine`: `python -m dlmine train {CONFIG} --set dataset.limit={args.limit} "
        f"--set training.epochs={args.epochs} --run-dir TMP --quiet`; it also writes the run "
        "directory (checkpoints every epoch, history, state), evaluates the best checkpoint "
        "(the model in memory when it is best.keras, else the file) in one `predict` pass and "
        "computes the per-class report and confusion matrix.",
        "- `plain`: `python benchmarks/plain_keras_mnist.py`, the idiomatic script: "
        "`model.fit(x, y, validation_data=..., shuffle=True)`, then `model.evaluate` on the test "
        "set.",
        "- `plain-keyed`: the same script with `--order epoch-keyed`: each epoch is fed in "
        "dlmine's order (`numpy.random.default_rng([seed, epoch]).permutation(n)`, one `fit` "
        "per epoch on the permuted arrays, `shuffle=False`): the like-for-like comparison of "
        "the accuracy.",
        "",
        "How each figure is measured:",
        "",
        "- **wall s**: the whole process, from `subprocess.Popen` to its exit, measured by the "
        "driver (interpreter start, imports, data loading, training, evaluation, writing files).",
        "- **fit s**: the sum of the training epochs, each from `on_epoch_begin` to "
        "`on_epoch_end` (validation included, checkpoint writing not): for dlmine the per-epoch "
        "seconds it writes in `train.log` (`epoch k/N - ... - 12.3s`, 0.1 s resolution); for the "
        "plain script the same span, measured by a callback. The plain script also reports the "
        "whole `model.fit` call (set-up included) in the raw JSON.",
        "- **samples/s**: training samples x epochs / fit s.",
        "- **RSS MB**: peak resident memory of the process (`ru_maxrss` from `os.wait4`); "
        "**CPU s**: its user + system time.",
        "- **accuracy**: test accuracy; for dlmine `run.json` `final_metrics.accuracy` (the best "
        "checkpoint by `val_loss`, here the last epoch), for the plain script `model.evaluate` "
        "of the final model.",
        "",
        "### Every run",
        "",
        *table(["run", "variant", "wall s", "fit s", "epochs s", "samples/s", "RSS MB", "CPU s",
                "others", "test accuracy"],
               [[r["index"], r["variant"], f"{r['wall_s']:.2f}", f"{r['fit_s']:.2f}",
                 " + ".join(f"{s:.1f}" for s in r["epoch_s"]), f"{r['samples_per_s']:.0f}",
                 f"{r['rss_mb']:.0f}", f"{r['cpu_s']:.1f}", f"{r['others_cores']:.2f}",
                 f"{r['accuracy']:.4f}"] for r in runs]),
        "",
        "### Medians",
        "",
        *table(["variant", "wall s", "fit s", "samples/s", "RSS MB", "CPU s", "others",
                "test accuracy"],
               [[f"`{v}`", f"{m['wall_s']:.2f}", f"{m['fit_s']:.2f}", f"{m['samples_per_s']:.0f}",
                 f"{m['rss_mb']:.0f}", f"{m['cpu_s']:.1f}", f"{m['others_cores']:.2f}",
                 f"{m['accuracy']:.4f}"] for v, m in summary.items()]),
        "",
        "### Ratios dlmine / plain (medians; below 1 is better for dlmine, except samples/s)",
        "",
        *table(["against", "wall", "fit", "samples/s", "peak RSS", "CPU"],
               [[f"`{k}`", *(f"{r[x]:.3f}" for x in ("wall_s", "fit_s", "samples_per_s",
                                                      "rss_mb", "cpu_s"))]
                for k, r in rel.items()]),
        "",
        "### Targets (issue 5)",
        "",
        *table(["target", "measured", "met"], [
            [f"median whole-process ratio <= {TARGETS['wall']}",
             f"{rel['plain']['wall_s']:.3f} ({dl['wall_s']:.1f} s / {plain['wall_s']:.1f} s)",
             "yes" if wall_ok else "**no**"],
            [f"peak memory ratio <= {TARGETS['rss']}",
             f"{rel['plain']['rss_mb']:.3f} ({dl['rss_mb']:.0f} MB / {plain['rss_mb']:.0f} MB)",
             "yes" if rss_ok else "**no**"],
            ["identical accuracy for identical seeds",
             f"dlmine {dl['accuracy']:.4f}, plain-keyed "
             f"{summary['plain-keyed']['accuracy']:.4f}" if "plain-keyed" in summary else
             "not measured (--no-keyed)",
             ("yes" if same_acc else "**no**") if "plain-keyed" in summary else "-"]]),
        "",
        f"CPU time, telling on a busy machine (issue 11's targets are in the section by work "
        f"below): dlmine's process uses {rel['plain']['cpu_s']:.3f}x the CPU time of the plain "
        f"script ({dl['cpu_s']:.2f} s / {plain['cpu_s']:.2f} s)"
        + (": the work it does beyond training (writing checkpoints every epoch, the per-class "
           "report, validating the config)." if rel["plain"]["cpu_s"] > 1.05 else "."),
        "",
        "Accuracy: with the same seed, `dlmine` and `plain-keyed` build the same initial weights "
        "and see the same batches in the same order, so they reach the same test accuracy. The "
        "idiomatic `plain` script draws its shuffle from Keras' global random state, so its "
        f"batches differ and its accuracy differs a little ({plain['accuracy']:.4f} here); that "
        "difference is the order of the data, not dlmine.",
        "",
    ]
    out += works_section(by_work or {"short": (runs, summary, rel)})
    out += startup_section(start_rows) + pipeline_section(pipeline)
    return "\n".join(out) + "\n"


def works_section(by_work: dict) -> list[str]:
    """Wall and CPU seconds of every work measured, the ratios and issue 11's targets."""
    lines = ["## Wall and CPU time by work (issue 11)", "",
             "Medians of the alternated runs; CPU s is the process' user + system time (all its "
             "threads), which other work on a shared machine disturbs less than the wall time. "
             "`short`: the work above; `long`: `configs/mnist_cnn.yaml` on all 60,000 training "
             "samples (54,000 / 6,000), `--long-epochs` epochs, 15 by default (`--work long`).", ""]
    rows, checks = [], []
    for work, (mine, summary, rel) in by_work.items():
        epochs = mine[0].get("epochs", "") if mine else ""
        for variant, m in summary.items():
            ratio = rel.get("plain") if variant == "dlmine" else None
            rows.append([work, f"`{variant}`", sum(r["variant"] == variant for r in mine), epochs,
                         f"{m['wall_s']:.2f}", f"{m['cpu_s']:.2f}",
                         f"{ratio['wall_s']:.3f}" if ratio else "",
                         f"{ratio['cpu_s']:.3f}" if ratio else ""])
        for key, target in WORK_TARGETS.get(work, {}).items():
            if "plain" in rel:
                value = rel["plain"][key]
                checks.append([f"{work}: {key.removesuffix('_s')} dlmine / plain <= {target:.2f}",
                               f"{value:.3f}", "yes" if value <= target else "**no**"])
    lines += table(["work", "variant", "runs", "epochs", "wall s", "CPU s", "wall / plain",
                    "CPU / plain"], rows)
    lines += ["", *table(["target", "measured", "met"], checks), ""]
    return lines


def startup_section(rows: list[dict]) -> list[str]:
    return [
        "## Start-up",
        "",
        "Median of 5 runs for `--help`, 2 for the others; `imports` lists which of TensorFlow, "
        "JAX and Keras were imported when the command exited (`sys.modules`, from a separate run "
        "of the same command). Target: `dlmine --help` under 0.5 s, and no "
        "TensorFlow or JAX import for `--help` and for a config that is wrong.",
        "",
        *table(["command", "median s", "exit", "imports", "first line of output"],
               [[r["command"], f"{r['median_s']:.2f}", r["exit"], ", ".join(r["imports"]) or "none",
                 "`" + r["first_line"].replace("|", "\\|") + "`"] for r in rows]),
        "",
    ]


def pipeline_table(rows: list[dict]) -> list[str]:
    return table(
        ["variant", "fit s", "each round", "vs arrays", "CPU s", "vs arrays", "epoch 1 s",
         "later epochs s", "samples/s", "final loss", "final val_loss"],
        [[f"`{r['variant']}`", f"{r['fit_s']:.2f}", ", ".join(f"{s:.2f}" for s in r["fit_s_all"]),
          f"{r['vs_arrays']:.3f}" if r["vs_arrays"] else "", f"{r['cpu_s']:.2f}",
          f"{r['cpu_vs_arrays']:.3f}" if r["cpu_vs_arrays"] else "", f"{r['first_epoch_s']:.2f}",
          f"{r['later_epoch_s']:.2f}" if r["later_epoch_s"] is not None else "",
          f"{r['samples_per_s']:.0f}", r["final"].get("loss"), r["final"].get("val_loss")]
         for r in rows])


def pipeline_verdict(runs: list[dict], names: list[str]) -> str:
    """Which variants dlmine could use beat `pydataset` in every round, by wall and by CPU time.

    A median difference smaller than the spread between rounds is not reported as a gain.
    """
    def rounds(name, key):
        return [r[key] for r in runs if r["variant"] == name]

    if "pydataset" not in names:
        return ""
    if len(rounds("pydataset", "fit_s")) < 2:
        return "One round only: too few to tell a gain from the spread between rounds."
    usable = [n for n in names if not n.startswith("arrays") and n != "pydataset"]
    parts = []
    for key, what in (("fit_s", "wall time"), ("cpu_s", "CPU time")):
        reference = rounds("pydataset", key)
        better = [n for n in usable if max(rounds(n, key)) < min(reference)]
        worse = [n for n in usable if min(rounds(n, key)) > max(reference)]
        said = (", ".join(f"`{n}` ({statistics.median(rounds(n, key)) / statistics.median(reference):.3f}x)"
                          for n in better) or "none")
        parts.append(f"by {what}, faster than `pydataset` in every round: {said}"
                     + (f"; slower in every round: {', '.join(f'`{n}`' for n in worse)}" if worse else ""))
    return ("Against what dlmine does today, counting only differences larger than the spread "
            "between rounds: " + "; ".join(parts) + ".")


def pipeline_section(pipeline: dict | None) -> list[str]:
    lines = ["## Input pipeline", ""]
    if pipeline is None:
        return lines + ["Not measured in this run (`--pipeline-rounds 0`).", ""]
    rows = [r for r in pipeline["rows"] if "+tiny" not in r["variant"]]
    tiny = [r for r in pipeline["rows"] if "+tiny" in r["variant"]]
    verdict = pipeline_verdict(pipeline["runs"], [r["variant"] for r in rows])
    lines += [
        "`python benchmarks/input_pipeline.py`: the same model and data trained in one process "
        "through each pipeline, alternated over "
        f"{pipeline['args']['rounds']} rounds (medians). `pydataset` is what dlmine does "
        "today (`dlmine/data/batches.py`: `EpochShuffled`, a `keras.utils.PyDataset`, with "
        "`fit(shuffle=False)`); `arrays` is plain Keras on arrays; `tfdata-keyed` is a tf.data "
        "pipeline that draws `default_rng([seed, epoch]).permutation(n)` when each epoch's "
        "iterator starts and gathers the batches in TensorFlow (`keyed_tf_dataset` in the "
        "script). Every variant but `arrays` keeps dlmine's order, keyed to (seed, epoch), "
        "which the equal final losses confirm. `+spe=N` is `steps_per_execution=N`, `+jit` is "
        "`jit_compile=True` (run in the first round only). **fit s** is the wall time of the "
        "`fit` calls, **CPU s** the process' CPU time in them (all threads), which other work "
        "on the machine disturbs less.",
        "",
        *pipeline_table(rows),
        "",
        "`arrays-keyed` calls `fit` once per epoch, which dlmine's callbacks (progress, early "
        "stopping, checkpoints) do not allow; it shows what plain arrays in dlmine's order cost.",
        "",
        verdict,
        "",
    ]
    if tiny:
        lines += [
            "The cost of feeding alone: the same pipelines with a model of one Dense layer "
            "(`+tiny`), whose training step costs almost nothing, so that `fit` time is mostly "
            "moving batches and the per-step overhead:",
            "",
            *pipeline_table(tiny),
            "",
        ]
    return lines


def kept_tail(path: Path) -> str:
    """The hand-written end of the document, from KEEP_MARK on, which a rewrite keeps."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    at = text.find(KEEP_MARK)
    return "" if at < 0 else text[at:]


# --- main ---------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant")
    parser.add_argument("--limit", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--backend", choices=["tensorflow", "jax"],
                        default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    parser.add_argument("--pipeline-rounds", type=int, default=3,
                        help="rounds of input_pipeline.py (0: skip it)")
    parser.add_argument("--no-keyed", action="store_true", help="skip the plain-keyed variant")
    parser.add_argument("--work", choices=["short", "long", "both"], default="short",
                        help="short: --limit samples, --epochs epochs; long: configs/mnist_cnn.yaml "
                        "on all the training samples for --long-epochs epochs (~3 min a process)")
    parser.add_argument("--long-epochs", type=int, default=15)
    parser.add_argument("--long-limit", type=int, default=0,
                        help="training samples of the long work (0: all 60,000)")
    parser.add_argument("--no-startup", dest="startup", action="store_false",
                        help="skip timing --help and check")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md",
                        help="the document to regenerate ('-': none)")
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="measure nothing: rewrite the document from a file --json wrote")
    return parser.parse_args(argv)


def measure_all(args) -> dict:
    """Run every measurement; the same dict that `--json` writes and `--from-json` reads."""
    env = dict(os.environ, KERAS_BACKEND=args.backend)
    env.setdefault("DLMINE_DATA_DIR", str((ROOT.parent / "shared" / "data").resolve()))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # dlmine sets it itself; the same for both
    facts = machine(args)
    variants = ["dlmine", "plain"] + ([] if args.no_keyed else ["plain-keyed"])
    runs = []
    with tempfile.TemporaryDirectory(prefix="dlmine-bench-") as tmp:
        workdir = Path(tmp)
        for name, work in works(args).items():
            for _repeat in range(args.repeats):
                for variant in variants:
                    if variant == "dlmine":
                        result = run_dlmine(args, env, workdir, len(runs), work)
                    else:
                        order = "keras" if variant == "plain" else "epoch-keyed"
                        result = run_plain(args, env, workdir, order, work)
                    result.update(index=len(runs) + 1, variant=variant, work=name, **work)
                    del result["stdout"], result["stderr"]
                    runs.append(result)
                    print(f"{result['index']:>2} {name:<5} {variant:<12} wall "
                          f"{result['wall_s']:.2f}s CPU {result['cpu_s']:.2f}s "
                          f"fit {result['fit_s']:.2f}s RSS {result['rss_mb']:.0f} MB "
                          f"others {result['others_cores']:.2f} accuracy {result['accuracy']:.4f}",
                          file=sys.stderr, flush=True)
        start_rows = startup(env, workdir) if args.startup else []
        pipeline = run_pipeline(args, env, workdir) if args.pipeline_rounds > 0 else None
    facts["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    return {"args": {k: getattr(args, k) for k in ("repeats", "limit", "epochs", "backend",
                                                   "pipeline_rounds", "work", "long_epochs",
                                                   "long_limit")},
            "machine": facts, "runs": runs, "startup": start_rows, "pipeline": pipeline}


def run_pipeline(args, env: dict, workdir: Path) -> dict:
    out = workdir / "pipeline.json"
    cmd = [sys.executable, str(BENCH / "input_pipeline.py"), "--rounds", str(args.pipeline_rounds),
           "--limit", str(args.limit), "--epochs", str(args.epochs), "--json", str(out)]
    done = subprocess.run(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    print("\n".join(line for line in done.stderr.splitlines() if line.startswith("round")),
          file=sys.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"input_pipeline.py exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def summarise(runs: list[dict]) -> dict:
    """{work: (its runs, medians by variant, ratios dlmine / each other variant)}."""
    out = {}
    for work in dict.fromkeys(r.get("work", "short") for r in runs):
        mine = [r for r in runs if r.get("work", "short") == work]
        variants = list(dict.fromkeys(r["variant"] for r in mine))
        summary = {v: medians([r for r in mine if r["variant"] == v]) for v in variants}
        rel = ({v: ratios(summary["dlmine"], summary[v]) for v in variants if v != "dlmine"}
               if "dlmine" in summary else {})
        out[work] = (mine, summary, rel)
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        for key, value in data.get("args", {}).items():
            setattr(args, key, value)
    else:
        data = measure_all(args)
    by_work = summarise(data["runs"])
    for work, (mine, summary, rel) in by_work.items():
        print_tables(mine, summary, rel, work)
    for row in data["startup"]:
        print(f"{row['command']}: {row['median_s']:.2f}s exit {row['exit']} "
              f"imports {', '.join(row['imports']) or 'none'}")
    if "short" not in by_work and str(args.output) != "-":
        print(f"{args.output} not rewritten: it is written from the short work, which this run "
              "did not measure", file=sys.stderr)
        args.output = Path("-")
    runs, summary, rel = by_work.get("short", ([], {}, {}))
    if str(args.output) != "-":
        args.output.parent.mkdir(parents=True, exist_ok=True)
        text = document(args, data["machine"], runs, summary, rel, data["startup"],
                        data["pipeline"], by_work)
        tail = kept_tail(args.output)
        args.output.write_text(text.rstrip("\n") + "\n\n" + tail if tail else text)
        print(f"wrote {args.output}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({**data, "medians": {w: s for w, (_, s, _) in by_work.items()},
                                         "ratios": {w: r for w, (_, _, r) in by_work.items()}},
                                        indent=2))


if __name__ == "__main__":
    main()
