"""dlmine's recommenders at scale: 2 million interactions over 200,000 items (issue 13).

Generates (seeded, numpy) a table of interactions with a Zipf-like item popularity and
planted structure (users in groups that prefer their group's items), trains a factorised
ranking model on it (`mf`, leave-last-out, sampled negatives) and serves 10,000 users'
top 10 over the whole catalogue with `recommend --users`. `train` and `recommend` run as
subprocesses; their wall seconds and peak RSS (`os.wait4`'s `ru_maxrss`) are measured and
compared with the size of the model and of the table: memory should follow them, never
users x items (20,000 x 200,000 float32 scores are 16 GB). Prints a Markdown table and
writes it into docs/benchmarks.md between the recommend-scale markers, unless
`--no-write`. The data and runs go under the git-ignored `runs/scale/`.

    python benchmarks/recommend_scale.py                  # the full scale
    python benchmarks/recommend_scale.py --interactions 100000 --items 10000 --users 1000 \\
        --no-write                                        # a 1/20 smoke test
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from docblock import write_block  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "runs" / "scale"
BEGIN, END = "<!-- recommend-scale -->", "<!-- end of recommend-scale -->"
GROUPS = 20  # user groups, each preferring its own items
IN_GROUP = 0.8  # the share of a user's interactions drawn from its group's items
MIN_PER_USER = 5  # so that every user keeps training rows after leave-last-out
FACTORS = 32


def generate(path: Path, n: int, num_items: int, num_users: int, seed: int) -> int:
    """Write `n` interactions (user, item, timestamp) to `path`; the distinct pairs."""
    rng = np.random.default_rng(seed)
    item_group = rng.integers(0, GROUPS, num_items)
    popularity = 1.0 / (rng.permutation(num_items) + 1.0) ** 0.8  # Zipf-like, random ranks
    user_group = rng.integers(0, GROUPS, num_users)
    activity = rng.lognormal(0.0, 1.0, num_users)  # some users far more active than others
    base = np.repeat(np.arange(num_users), min(MIN_PER_USER, n // num_users))
    rest = rng.choice(num_users, n - len(base), p=activity / activity.sum())
    users = rng.permutation(np.concatenate([base, rest]))
    draws = rng.random(n)
    cdf = np.cumsum(popularity)
    items = np.minimum(np.searchsorted(cdf / cdf[-1], draws, side="right"), num_items - 1)
    in_group = rng.random(n) < IN_GROUP
    for g in range(GROUPS):
        members = np.flatnonzero(item_group == g)
        rows = np.flatnonzero(in_group & (user_group[users] == g))
        cdf = np.cumsum(popularity[members])
        at = np.searchsorted(cdf / cdf[-1], draws[rows], side="right")
        items[rows] = members[np.minimum(at, len(members) - 1)]
    times = rng.integers(1_500_000_000, 1_600_000_000, n)
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"user": users, "item": items, "timestamp": times}).to_csv(
        path.with_suffix(".tmp"), index=False)
    path.with_suffix(".tmp").replace(path)
    return int(len(np.unique(users.astype("int64") * num_items + items)))


CONFIG = """\
# Written by benchmarks/recommend_scale.py.
dataset:
  name: interactions
  path: {path}
  task: ranking
  interactions:
    user: user
    item: item
    timestamp: timestamp
    split: leave_last_out
    negatives: 4
model:
  recommender: {{type: mf, factors: {factors}}}
training:
  epochs: {epochs}
  batch_size: 4096
  optimizer: {{name: adam, learning_rate: 0.002}}
"""


def measured(argv: list[str], stdout: Path) -> tuple[float, float, int]:
    """Run `argv` as a child: (wall seconds, peak RSS MiB, exit status)."""
    started = time.time()
    with open(stdout, "w") as out, open(stdout.with_suffix(".err"), "w") as err:
        child = subprocess.Popen(argv, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    return time.time() - started, usage.ru_maxrss / 1024, child.returncode  # KiB on Linux


def check(rc: int, what: str, stdout: Path) -> None:
    if rc != 0:
        sys.exit(f"{what} failed (exit {rc}):\n{stdout.with_suffix('.err').read_text()[-3000:]}")


def final_evaluation_s(info: dict) -> float | None:
    """The seconds after the epochs (saving, reloading the best checkpoint, the sampled and
    the full ranking of the test split): run.json's end - start - the fit's duration (its
    timestamps have a resolution of 1 s)."""
    try:
        started, ended = (datetime.datetime.fromisoformat(info[k]) for k in ("started", "ended"))
        return (ended - started).total_seconds() - float(info["duration_s"])
    except (KeyError, TypeError, ValueError):
        return None


def total_params(run: Path) -> int | None:
    for line in (run / "train.log").read_text().splitlines():
        if "Total params" in line:
            digits = "".join(c for c in line.split(":", 1)[1].split("(")[0] if c.isdigit())
            return int(digits) if digits else None
    return None


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
            f"{datetime.date.today().isoformat()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interactions", type=int, default=2_000_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--recommend-users", type=int, default=10_000,
                        help="users served by `recommend --users` (at most --users)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()

    name = f"{args.interactions}-{args.items}-{args.users}-{args.seed}"
    data = WORK / f"interactions-{name}.csv"
    started = time.time()
    pairs_file = data.with_suffix(".pairs")
    if data.exists() and pairs_file.exists():
        pairs, generated = int(pairs_file.read_text()), "reused"
    else:
        pairs = generate(data, args.interactions, args.items, args.users, args.seed)
        pairs_file.write_text(str(pairs))
        generated = f"{time.time() - started:.0f}"
    size = data.stat().st_size / 2 ** 20
    config = WORK / f"mf-{name}.yaml"
    config.write_text(CONFIG.format(path=data, factors=FACTORS, epochs=args.epochs))

    dlmine = [sys.executable, "-m", "dlmine"]
    train_out = WORK / f"train-{name}.out"
    train_s, train_rss, rc = measured(dlmine + ["train", str(config), "--quiet", "--runs-root",
                                                str(WORK / "runs")], train_out)
    check(rc, "train", train_out)
    run = Path(train_out.read_text().strip().splitlines()[-1])
    report = json.loads((run / "eval.json").read_text())
    metrics, info = report["metrics"], json.loads((run / "run.json").read_text())
    fit_s = info.get("duration_s")
    params = total_params(run)

    vocab = json.loads((run / "preprocessing.json").read_text())
    served = min(args.recommend_users, args.users)
    known_users = _users_of(vocab)
    chosen = np.random.default_rng([args.seed, 1]).choice(known_users, served, replace=False)
    users_file = WORK / f"users-{name}.txt"
    users_file.write_text("".join(f"{u}\n" for u in chosen))
    out_csv = WORK / f"recommend-{name}.csv"
    rec_out = WORK / f"recommend-{name}.out"
    rec_s, rec_rss, rc = measured(dlmine + ["recommend", str(run), "--users", str(users_file),
                                            "--k", "10", "-o", str(out_csv)], rec_out)
    check(rc, "recommend", rec_out)
    with open(out_csv) as f:
        rows = sum(1 for _ in f) - 1
    if rows != served * 10:
        sys.exit(f"recommend wrote {rows} rows, expected {served * 10}")

    model_mib = (params or 0) * 4 / 2 ** 20
    dense_gib = args.users * args.items * 4 / 2 ** 30
    full_eval = final_evaluation_s(info)
    lines = [
        f"{args.interactions:,} generated interactions ({pairs:,} distinct pairs; CSV "
        f"{size:.0f} MiB) of {args.users:,} users over {args.items:,} items (Zipf-like "
        f"popularity, {GROUPS} user groups preferring their own items). `mf`, {FACTORS} "
        f"factors, 4 negatives, leave-last-out, {args.epochs} epoch(s) of batch 4096: "
        f"{params:,} parameters = {model_mib:.0f} MiB of float32; a users x items score "
        f"matrix would be {dense_gib:.1f} GiB.", "",
        "| step | seconds | peak RSS MiB | notes |", "|---|---|---|---|",
        f"| generate the table | {generated} | - | numpy, seeded; `runs/scale/` (git-ignored) |",
        f"| `dlmine train` | {train_s:.0f} | {train_rss:.0f} | fit {fit_s:.0f} s; final "
        f"evaluation (saving and reloading the model, sampled + full ranking of "
        f"{report['samples']:,} held-out users against all {args.items:,} items) "
        + (f"{full_eval:.0f} s" if full_eval is not None else "not timed")
        + f"; full_hr@10 {metrics.get('full_hr@10', float('nan')):.3f}, hr@10 (99 sampled) "
        f"{metrics.get('hr@10', float('nan')):.3f}, coverage@10 "
        f"{metrics.get('coverage@10', float('nan')):.3f} |",
        f"| `dlmine recommend --users` | {rec_s:.0f} | {rec_rss:.0f} | {served:,} users' top 10 "
        f"over all {args.items:,} items ({rows:,} rows); includes reading the table again |",
        "", f"Machine: {machine()}.", ""]
    text = "\n".join(lines)
    print(text)
    if args.no_write:
        return
    write_block(f"{BEGIN}\n## Recommenders at scale (`python benchmarks/recommend_scale.py`)\n\n"
                f"{text}{END}", BEGIN, END)


def _users_of(vocab: dict) -> list:
    """The training users' ids from preprocessing.json."""
    def find(node):
        if isinstance(node, dict):
            if isinstance(node.get("users"), list):
                return node["users"]
            for value in node.values():
                found = find(value)
                if found is not None:
                    return found
        return None
    users = find(vocab)
    if users is None:
        sys.exit("preprocessing.json holds no users vocabulary")
    return users


if __name__ == "__main__":
    main()
