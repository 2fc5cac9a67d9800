"""Tables, text and image folders, end to end; k-fold; the shipped configs reach their floors."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CONFIGS, write_config

TABLE_CONFIG = """\
name: table
seed: 3
dataset:
  name: csv
  path: people.csv
  target: bought
{extra}model:
  layers:
    - Dense: {{units: 8, activation: relu}}
    - Dense: {{units: 2, activation: softmax}}
training:
  epochs: 3
  batch_size: 16
"""


def people(folder: Path, rows: int = 80, holes: bool = False) -> Path:
    rng = random.Random(0)
    path = folder / "people.csv"
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["age", "city", "income", "bought"])
        for i in range(rows):
            age = "" if holes and i == 5 else rng.randint(18, 80)
            out.writerow([age, rng.choice(["paris", "lyon", "nice"]), rng.random() * 100,
                          "yes" if i % 2 else "no"])
    return path


def train(cli, cfg: Path, run: Path, *extra: str):
    return cli("train", cfg, "--run-dir", run, "--quiet", *extra)


def test_a_csv_table_trains_and_evaluates_from_raw_columns(cli, tmp_path):
    people(tmp_path)
    cfg = write_config(tmp_path, TABLE_CONFIG.format(extra=""))
    result = train(cli, cfg, tmp_path / "run")
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "run" / "preprocessing.json").read_text())
    assert state["kind"] == "table"
    assert state["columns"] == {"age": "numeric", "city": "categorical", "income": "numeric"}
    assert state["encoder"]["city"]["vocabulary"] == ["lyon", "nice", "paris"]
    assert state["output_shape"] == [6]  # age, income, three cities and the unseen-city slot
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["class_names"] == ["no", "yes"]
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert {"roc_auc", "pr_auc"} <= set(report["metrics"])  # binary: AUCs in eval.json
    again = cli("evaluate", tmp_path / "run", "--json")
    assert json.loads(again.stdout)["metrics"] == pytest.approx(report["metrics"], abs=1e-6)
    (tmp_path / "new.csv").write_text("age,city,income\n30,paris,10\n50,rome,90\n")
    predicted = cli("predict", tmp_path / "run", tmp_path / "new.csv")  # 'rome' was never seen
    assert predicted.exit_code == 0, predicted.output
    lines = predicted.stdout.splitlines()
    assert lines[0] == "sample,class,class_index,prob_no,prob_yes" and len(lines) == 3
    (tmp_path / "bad.csv").write_text("age,town\n30,paris\n")
    refused = cli("predict", tmp_path / "run", tmp_path / "bad.csv")
    assert refused.exit_code == 1
    assert refused.stderr == (f"Error: {tmp_path / 'bad.csv'}: the input lacks column 'city'; "
                              "this run was trained on the columns age, city, income; "
                              "received the columns age, town\n")


def test_table_encoder_handles_categories_never_seen_in_training():
    import pandas as pd

    from dlmine.data.tabular import TableEncoder

    enc = TableEncoder({"x": "numeric", "c": "categorical"})
    enc.fit(pd.DataFrame({"x": [1.0, 3.0], "c": ["a", "b"]}))
    out = enc.transform(pd.DataFrame({"x": [2.0, None], "c": ["b", "zzz"]}))
    np.testing.assert_allclose(out, [[0.0, 0, 1, 0], [0.0, 0, 0, 1]])


def test_table_encoder_puts_embedded_codes_last_with_an_unseen_slot():
    import pandas as pd

    from dlmine.data.tabular import TableEncoder

    enc = TableEncoder({"c": "embedding", "x": "numeric", "d": "categorical"})
    enc.fit(pd.DataFrame({"c": ["b", "a", "b"], "x": [1.0, 2.0, 3.0], "d": ["u", "v", "u"]}))
    assert enc.layout() == {"dense": 4, "embedded": [{"column": "c", "codes": 3}]}
    out = enc.transform(pd.DataFrame({"c": ["a", "zzz"], "x": [2.0, 2.0], "d": ["v", "u"]}))
    np.testing.assert_allclose(out, [[0.0, 0, 1, 0, 0], [0.0, 1, 0, 0, 2]])  # 'zzz': code 2


def shop(folder: Path, rows: int = 300, cities: int = 12) -> Path:
    """Whether a customer buys depends on the city alone: an embedding must learn it."""
    rng = random.Random(1)
    names = [f"city{i}" for i in range(cities)]
    path = folder / "shop.csv"
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["age", "city", "income", "bought"])
        for _ in range(rows):
            city = rng.choice(names)
            out.writerow([rng.randint(18, 80), city, round(rng.random() * 100, 2),
                          "yes" if names.index(city) % 3 == 0 else "no"])
    return path


def shop_config(folder: Path, how: str) -> Path:
    shop(folder)
    return write_config(folder, TABLE_CONFIG.replace("people.csv", "shop.csv")
                        .replace("epochs: 3", "epochs: 25").format(extra=how + "  embedding_dim: 3\n"))


def test_categorical_encoding_embedding_embeds_every_categorical_column(cli, tmp_path):
    cfg = shop_config(tmp_path, "  categorical_encoding: embedding\n")  # city is inferred
    checked = cli("check", cfg)
    assert checked.exit_code == 0, checked.output
    assert "(ColumnEmbedding)" in checked.stdout
    assert checked.stdout.endswith("OK: 2 layers, input shape (3,), 105 parameters\n")


def test_embedded_categorical_columns_learn_and_round_trip(cli, tmp_path):
    import keras

    cfg = shop_config(tmp_path, "  columns: {age: numeric, city: embedding, income: numeric}\n")
    checked = cli("check", cfg)
    assert checked.exit_code == 0, checked.output
    assert "(ColumnEmbedding)" in checked.stdout
    # 13 x 3 embedding weights (12 cities, the unseen slot), then (2 + 3) x 8 + 8 and 8 x 2 + 2
    assert checked.stdout.endswith("OK: 2 layers, input shape (3,), 105 parameters\n")
    run = tmp_path / "run"
    result = train(cli, cfg, run)
    assert result.exit_code == 0, result.output
    state = json.loads((run / "preprocessing.json").read_text())
    assert state["columns"] == {"age": "numeric", "city": "embedding", "income": "numeric"}
    assert state["output_shape"] == [3]  # age, income, and the city's code
    from dlmine.model.io import load_model_file

    # safe_mode=True: dlmine's own layer is registered, so the model loads
    model = load_model_file(run / "checkpoints" / "best.keras")
    table = model.get_layer("column_embedding").get_weights()
    assert [w.shape for w in table] == [(13, 3)]  # 12 cities and the unseen-city slot
    assert isinstance(model.get_layer("column_embedding"), keras.layers.Layer)
    report = json.loads((run / "eval.json").read_text())
    assert report["metrics"]["accuracy"] >= 0.95  # the label is a function of the city
    again = cli("evaluate", run, "--json")
    assert json.loads(again.stdout)["metrics"] == pytest.approx(report["metrics"], abs=1e-6)
    (tmp_path / "new.csv").write_text("age,city,income\n30,city0,10\n50,rome,90\n40,city1,5\n")
    predicted = cli("predict", run, tmp_path / "new.csv")
    assert predicted.exit_code == 0, predicted.output
    rows = predicted.stdout.splitlines()[1:]
    assert [r.split(",")[1] for r in (rows[0], rows[2])] == ["yes", "no"]
    assert len(rows) == 3  # 'rome' was never seen: its code is the unseen slot
    for fmt, name in (("onnx", "model.onnx"), ("tflite", "model.tflite")):  # dlmine's own layer
        exported = cli("export", run, "--format", fmt)
        assert exported.exit_code == 0, exported.output
        assert exported.stdout == f"{run / 'export' / name}\n"
        assert exported.stderr.startswith(f"checked: predictions of the {fmt} export on 8 test "
                                          "samples match the best checkpoint")


def test_embedding_options_are_for_tables_only(cli, tmp_path):
    cfg = write_config(tmp_path, "name: t\ndataset:\n  name: digits\n  categorical_encoding: "
                       "embedding\n  columns: {a: embeding}\nmodel:\n  layers:\n"
                       "    - Flatten\n    - Dense: {units: 10, activation: softmax}\n")
    result = cli("check", cfg)
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: 3 problems in the config:\n"
        f"  {cfg}:4: dataset.categorical_encoding: `categorical_encoding` is read for tables only "
        "(name: csv or parquet), but name is digits\n"
        f"  {cfg}:5: dataset.columns: `columns` is read for tables only (name: csv or parquet)\n"
        f"  {cfg}:5: dataset.columns.a: expected one of: numeric, categorical, embedding, ignore, "
        "received 'embeding'; did you mean 'embedding'?\n")


@pytest.mark.parametrize("extra, message", [
    ("  target: buoght\n", "people.csv: target column 'buoght' not found; did you mean 'bought'? "
                           "Columns: age, city, income, bought"),
    ("  columns: {age: numeric, town: categorical}\n",
     "people.csv: column 'town' named in dataset.columns is not in the file. Columns: "
     "age, city, income, bought"),
    ("  columns: {city: numeric}\n",
     "people.csv: column 'city', row 2: 'lyon' is not a number (the column is numeric; mark it "
     "`categorical` in dataset.columns if it holds categories)"),
])
def test_table_problems_name_the_file_the_column_and_the_row(cli, tmp_path, extra, message):
    people(tmp_path)
    text = TABLE_CONFIG.format(extra=extra).replace("  target: bought\n" + extra, extra) \
        if extra.startswith("  target") else TABLE_CONFIG.format(extra=extra)
    cfg = write_config(tmp_path, text)
    result = train(cli, cfg, tmp_path / "run")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: ") and result.stderr.rstrip().endswith(message)
    assert not (tmp_path / "run").exists()


def test_missing_values_are_an_error_unless_the_config_says_impute_or_drop(cli, tmp_path):
    people(tmp_path, holes=True)
    cfg = write_config(tmp_path, TABLE_CONFIG.format(extra=""))
    result = train(cli, cfg, tmp_path / "r1")
    assert result.exit_code == 1
    assert result.stderr.rstrip().endswith(
        "people.csv: 1 row(s) have missing values (first: row 7, column 'age'; an empty cell, "
        "or a word read as missing: NA, N/A, NaN, null, None, ...); set "
        "dataset.missing: impute (numeric: the training mean, categorical: its own category) "
        "or drop")
    for how, samples in (("impute", 80), ("drop", 79)):
        cfg = write_config(tmp_path, TABLE_CONFIG.format(extra=f"  missing: {how}\n"))
        assert train(cli, cfg, tmp_path / how).exit_code == 0
        counts = json.loads((tmp_path / how / "run.json").read_text())["samples"]
        assert sum(counts.values()) == samples


def test_an_empty_csv_is_named(cli, tmp_path):
    (tmp_path / "people.csv").write_text("")
    cfg = write_config(tmp_path, TABLE_CONFIG.format(extra=""))
    result = train(cli, cfg, tmp_path / "run")
    assert result.exit_code == 1
    assert result.stderr.rstrip().endswith(
        "people.csv: the file is empty; expected a header row and data rows")


def test_a_table_config_without_target_is_a_config_error(cli, tmp_path):
    people(tmp_path)
    cfg = write_config(tmp_path, TABLE_CONFIG.format(extra="").replace("  target: bought\n", ""))
    result = cli("check", cfg)
    assert result.exit_code == 2
    assert "dataset: name: csv needs `target:`, the column to predict" in result.stderr


def test_parquet_tables_read_like_csv(cli, tmp_path):
    import pandas as pd

    pd.read_csv(people(tmp_path)).to_parquet(tmp_path / "people.parquet")
    text = TABLE_CONFIG.format(extra="").replace("name: csv", "name: parquet") \
        .replace("people.csv", "people.parquet")
    assert train(cli, write_config(tmp_path, text), tmp_path / "run").exit_code == 0


def test_kfold_writes_one_run_per_fold_and_the_mean_and_std(cli, tmp_path):
    people(tmp_path)
    cfg = write_config(tmp_path, TABLE_CONFIG.format(extra=""))
    result = train(cli, cfg, tmp_path / "run", "--folds", "3")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["folds"] == 3 and len(report["per_fold"]) == 3
    accuracies = [fold["accuracy"] for fold in report["per_fold"]]
    assert report["metrics"]["accuracy"] == pytest.approx(np.mean(accuracies))
    assert report["std"]["accuracy"] == pytest.approx(np.std(accuracies))
    f1s = [json.loads((tmp_path / "run" / f"fold-{k}" / "eval.json").read_text())["macro_f1"]
           for k in (1, 2, 3)]  # beside the Keras metrics, as in each fold's eval.json
    assert report["metrics"]["macro_f1"] == pytest.approx(np.mean(f1s))
    for k in (1, 2, 3):
        fold = json.loads((tmp_path / "run" / f"fold-{k}" / "run.json").read_text())
        assert fold["status"] == "completed"
        assert fold["samples"]["validation"] in (21, 22)  # a third of the 64 training rows


def reviews(folder: Path) -> None:
    rng = random.Random(1)
    good, bad = "good great superb love".split(), "bad awful poor hate".split()
    with open(folder / "reviews.csv", "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["text", "label"])
        for i in range(120):
            words = rng.choices(good if i % 2 else bad, k=2) + rng.choices("a the film".split(), k=4)
            out.writerow([" ".join(words), "pos" if i % 2 else "neg"])
    for label in ("neg", "pos"):
        (folder / "texts" / label).mkdir(parents=True)
    with open(folder / "reviews.csv") as handle:
        for i, row in enumerate(csv.DictReader(handle)):
            (folder / "texts" / row["label"] / f"{i}.txt").write_text(row["text"])


TEXT_CONFIG = """\
name: reviews
dataset: {{name: text, path: {path}}}
preprocessing:
  text: {{max_tokens: 50, sequence_length: 8}}
model:
  layers:
    - Embedding: {{input_dim: 50, output_dim: 8}}
    - GlobalAveragePooling1D
    - Dense: {{units: 2, activation: softmax}}
training: {{epochs: 12, batch_size: 16, optimizer: {{name: adam, learning_rate: 0.02}}}}
"""


@pytest.mark.parametrize("source", ["reviews.csv", "texts"])
def test_text_from_a_csv_or_class_folders(cli, tmp_path, source):
    reviews(tmp_path)
    cfg = write_config(tmp_path, TEXT_CONFIG.format(path=source))
    result = train(cli, cfg, tmp_path / "run")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["metrics"]["accuracy"] >= 0.9
    assert report["labels"] == ["neg", "pos"]
    state = json.loads((tmp_path / "run" / "preprocessing.json").read_text())
    # 11 words, the padding and the unknown token: the vocabulary is saved with the run
    assert len(state["vocabulary"]["terms"]) == 13 and state["output_shape"] == [8]
    (tmp_path / "one.txt").write_text("great superb love the film")
    predicted = cli("predict", tmp_path / "run", tmp_path / "one.txt")
    assert predicted.exit_code == 0, predicted.output
    assert predicted.stdout.splitlines()[1].startswith("0,pos,1,")


IMAGE_CONFIG = """\
name: colors
dataset: {name: images, path: imgs, image_size: [12, 12], color_mode: rgb}
preprocessing:
  rescale: 1/255
  augmentation:
    - RandomFlip: {mode: horizontal}
model:
  layers:
    - Conv2D: {filters: 4, kernel_size: 3, activation: relu}
    - GlobalAveragePooling2D
    - Dense: {units: 2, activation: softmax}
training: {epochs: 8, batch_size: 8, optimizer: {name: adam, learning_rate: 0.02}}
"""


def test_image_folders_with_augmentation(cli, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, color in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(24):
            pixels = np.clip(rng.normal(color, 30, (15, 17, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(tmp_path / "imgs" / name / f"{i}.png")
    cfg = write_config(tmp_path, IMAGE_CONFIG)
    check = cli("check", cfg)
    assert "input shape (12, 12, 3)" in check.stdout and "random_flip" in check.stdout
    result = train(cli, cfg, tmp_path / "run")
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["class_names"] == ["blue", "red"] and info["input_shape"] == [12, 12, 3]
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["metrics"]["accuracy"] >= 0.9
    predicted = cli("predict", tmp_path / "run", tmp_path / "imgs" / "red")
    assert predicted.exit_code == 0, predicted.output
    lines = predicted.stdout.splitlines()
    assert lines[0].startswith("sample,file,class,class_index,")
    names = sorted(p.name for p in (tmp_path / "imgs" / "red").iterdir())
    assert [line.split(",")[1] for line in lines[1:]] == names
    classes = [line.split(",")[2] for line in lines[1:]]
    assert len(classes) == 24 and classes.count("red") >= 20
    (tmp_path / "empty").mkdir()
    empty = cli("predict", tmp_path / "run", tmp_path / "empty")
    assert (empty.exit_code, empty.stderr) == (1, (
        f"Error: {tmp_path / 'empty'}: no images (.bmp, .gif, .jpeg, .jpg, .png)\n"))
    # the SavedModel's serve endpoint passes images through the augmentation, as predict does
    exported = cli("export", tmp_path / "run", "--format", "savedmodel")
    assert exported.exit_code == 0, exported.output
    assert "match the best checkpoint" in exported.stderr
    (tmp_path / "table.csv").write_text("x\n1\n")
    wrong_kind = cli("predict", tmp_path / "run", tmp_path / "table.csv")
    assert (wrong_kind.exit_code, wrong_kind.stderr) == (2, (
        f"Error: {tmp_path / 'table.csv'}: cannot read '.csv' files; expected an image file "
        "(.bmp, .gif, .jpeg, .jpg, .png) or a folder of images\n"))


@pytest.mark.parametrize("config, metric, floor", [
    ("breast_cancer_mlp", "accuracy", 0.95),
    ("wine_mlp", "accuracy", 0.94),
    ("iris_mlp", "accuracy", 0.90),
    ("diabetes_regression", "r2", 0.35),
    ("digits_cnn", "accuracy", 0.97),
])
def test_shipped_config_reaches_its_floor(cli, tmp_path, config, metric, floor):
    result = train(cli, CONFIGS / f"{config}.yaml", tmp_path / "run")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "eval.json").read_text())["metrics"]
    assert metrics[metric] >= floor, metrics


def test_shipped_csvs_are_small_and_written_by_the_script():
    for name in ("breast_cancer", "wine", "iris", "diabetes"):
        path = CONFIGS / "data" / f"{name}.csv"
        assert path.stat().st_size < 200_000
    header = (CONFIGS / "data" / "diabetes.csv").read_text().splitlines()[0]
    assert header == "age,sex,bmi,bp,s1,s2,s3,s4,s5,s6,progression"


def test_column_embedding_reads_codes_exactly_under_mixed_precision():
    import keras

    from dlmine.model.layers import ColumnEmbedding

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = ColumnEmbedding(1, [2000], [3], ["shop"], dtype="float32")  # as model.py makes it
        out = np.asarray(layer(np.array([[0.5, 1001.0], [0.25, 1999.0]], dtype="float32")))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    table = np.asarray(layer.embeddings[0].embeddings)
    np.testing.assert_array_equal(out[:, 0], [0.5, 0.25])
    np.testing.assert_array_equal(out[:, 1:], table[[1001, 1999]])  # bfloat16 would say 1000, 2000
