"""dlmine explain's permutation importance against scikit-learn's, on the same fitted model.

A planted table (the label is the sign of column c3; nine other columns are noise) is
trained by `dlmine train`; `dlmine explain` and `sklearn.inspection.permutation_importance`
(10 repeats each, on the same test rows, through the run's saved preprocessing) measure the
drop of accuracy when each column is shuffled. Prints a Markdown table and writes it into
docs/benchmarks.md between the explain markers. `tests/test_explain.py` asserts the same
agreement (within 0.05 per column).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from docblock import write_block  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BEGIN, END = "<!-- explain-vs-sklearn -->", "<!-- end of explain-vs-sklearn -->"
CONFIG = """
seed: 3
dataset: {name: csv, path: planted.csv, target: label}
model:
  layers:
    - Dense: {units: 16, activation: relu}
    - Dense: {units: 2, activation: softmax}
training: {epochs: 25, batch_size: 32, optimizer: {name: adam, learning_rate: 0.01}}
"""


def main() -> None:
    from sklearn.inspection import permutation_importance

    from dlmine.backend.runtime import import_keras
    from dlmine.data import Preprocessor, source_for
    from dlmine.model.io import load_checkpoint
    from dlmine.rundir import RunDir

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(600, 10))
        frame = pd.DataFrame(x, columns=[f"c{i}" for i in range(10)])
        frame["label"] = np.where(x[:, 3] > 0, "yes", "no")
        frame.to_csv(folder / "planted.csv", index=False)
        (folder / "cfg.yaml").write_text(CONFIG)
        dlmine = [sys.executable, "-m", "dlmine"]
        subprocess.run([*dlmine, "train", str(folder / "cfg.yaml"), "--run-dir",
                        str(folder / "run"), "--quiet"], check=True, cwd=ROOT)
        out = subprocess.run([*dlmine, "explain", str(folder / "run"), "--json", "--repeats",
                              "10"], check=True, cwd=ROOT, capture_output=True, text=True)
        ours = {r["input"]: r for r in json.loads(out.stdout)["importance"]["inputs"]}
        import_keras()
        run = RunDir.open(folder / "run")
        cfg = run.read_config()
        raw, y = source_for(cfg.dataset).load(cfg.seed).split("test")
        prep = Preprocessor.load(run.path)
        model = load_checkpoint(run, "best")

        class Fitted:
            def fit(self, *_):
                return self

            def score(self, rows, labels):
                outputs = model.predict(prep.transform_x(rows), verbose=0)
                return float((outputs.argmax(axis=1) == labels).mean())

        theirs = permutation_importance(Fitted(), raw.reset_index(drop=True), y, n_repeats=10,
                                        random_state=0)
    lines = ["| column | dlmine mean | dlmine std | scikit-learn mean | scikit-learn std | "
             "difference |", "|---|---|---|---|---|---|"]
    gaps = []
    for i, column in enumerate(raw.columns):
        mine, mean, std = ours[column], theirs.importances_mean[i], theirs.importances_std[i]
        gaps.append(abs(mine["mean"] - mean))
        lines.append(f"| {column} | {mine['mean']:.4f} | {mine['std']:.4f} | {mean:.4f} | "
                     f"{std:.4f} | {mine['mean'] - mean:+.4f} |")
    text = ("## dlmine explain against scikit-learn's permutation_importance\n\n"
            "A planted table (label: the sign of c3), one fitted model, the same 120 test rows, "
            "10 shuffles per column each (different random shuffles); drop of accuracy:\n\n"
            + "\n".join(lines) + f"\n\nLargest difference {max(gaps):.4f}; both rank c3 "
            "first.\n")
    print(text)
    write_block(f"{BEGIN}\n{text}{END}", BEGIN, END)


if __name__ == "__main__":
    main()
