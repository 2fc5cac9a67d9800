"""Write the CSV files of the shipped tabular configs from scikit-learn's bundled datasets.

Run once (`python configs/data/make_csvs.py`); the files are committed, so the configs
read real CSV files and the CSV path is what they exercise. Column names are made
readable (snake_case, units dropped into the name); targets are class names.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from sklearn import datasets

HERE = Path(__file__).resolve().parent


def snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def frame(bunch, target: str, names=None) -> pd.DataFrame:
    table = pd.DataFrame(bunch.data, columns=[snake(c) for c in bunch.feature_names])
    values = bunch.target
    table[target] = [names[v] for v in values] if names is not None else values
    return table


def main() -> None:
    cancer = datasets.load_breast_cancer()
    table = frame(cancer, "diagnosis", list(cancer.target_names))
    table.to_csv(HERE / "breast_cancer.csv", index=False, float_format="%.5g")

    wine = datasets.load_wine()
    table = frame(wine, "cultivar", [f"cultivar_{i + 1}" for i in range(3)])
    table.to_csv(HERE / "wine.csv", index=False, float_format="%.5g")

    iris = datasets.load_iris()
    table = frame(iris, "species", list(iris.target_names))
    table.to_csv(HERE / "iris.csv", index=False, float_format="%.4g")

    diabetes = datasets.load_diabetes(scaled=False)
    table = frame(diabetes, "progression")
    table["sex"] = table["sex"].map({1.0: "group_1", 2.0: "group_2"})  # the one categorical column
    table.to_csv(HERE / "diabetes.csv", index=False, float_format="%.5g")


if __name__ == "__main__":
    main()
