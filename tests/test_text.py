"""Text: dlmine's vocabulary, every output mode end to end on both backends, input problems
named, and the shipped TF-IDF config on the real reviews."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, write_config


def vocabulary(**keys):
    from dlmine.config.schema import TextConfig
    from dlmine.data.vocabulary import Vocabulary

    return Vocabulary(TextConfig(**keys))


def test_standardizing_strips_html_case_and_punctuation():
    vocab = vocabulary()
    assert vocab.tokens("Great<br /><br />I LOVE it, don't you?") == \
        ["great", "i", "love", "it", "dont", "you"]
    kept = vocabulary(lowercase=False, strip_punctuation=False, strip_html=False)
    assert kept.tokens("Great<br />it!") == ["Great<br", "/>it!"]
    assert vocabulary(ngrams=2).tokens("a b c") == ["a", "b", "c", "a b", "b c"]
    split = vocabulary(strip_punctuation="split", ngrams=2)
    assert split.tokens("Great!! Don't (5/5)") == [
        "great", "!", "!", "dont", "(", "5", "/", "5", ")",
        "great !", "! !", "! dont", "dont (", "( 5", "5 /", "/ 5", "5 )"]
    # Unicode punctuation is split off too, and the typographic apostrophe removed
    assert vocabulary(strip_punctuation="split").tokens("“Great” … wonderful—really! don’t") == [
        "“", "great", "”", "…", "wonderful", "—", "really", "!", "dont"]


def test_int_mode_gives_padded_ids_with_an_unseen_id():
    vocab = vocabulary(max_tokens=5, sequence_length=4).fit(["b a b", "c b a", "d"])
    # 0 padding, 1 unseen, then by frequency (b 3, a 2), ties alphabetical (c before d): 5 ids
    assert vocab.terms == ["", "[UNK]", "b", "a", "c"]
    # a text without a term is the unseen id alone: a masked average always has one step
    np.testing.assert_array_equal(vocab.transform(["a b zzz", "b b b b b b", "", "!!! <br />"]),
                                  [[3, 2, 1, 0], [2, 2, 2, 2], [1, 0, 0, 0], [1, 0, 0, 0]])
    assert vocab.transform(["a"]).dtype == np.int32


def test_bag_modes_count_the_terms_of_each_text():
    texts = ["b a b", "c b a", "d"]
    multi = vocabulary(max_tokens=6, output_mode="multi_hot").fit(texts)
    np.testing.assert_array_equal(multi.transform(["b b zzz"]), [[0, 1, 1, 0, 0, 0]])
    count = vocabulary(max_tokens=6, output_mode="count").fit(texts)
    np.testing.assert_array_equal(count.transform(["b b zzz"]), [[0, 1, 2, 0, 0, 0]])
    tfidf = vocabulary(max_tokens=6, output_mode="tf_idf").fit(texts)
    row = tfidf.transform(["b b c"])[0]
    idf_b, idf_c = np.log(4 / 3) + 1, np.log(4 / 2) + 1  # b in 2 of 3 texts, c in 1 (smoothed)
    expected = np.array([0, 0, 2 * idf_b, 0, idf_c, 0])
    np.testing.assert_allclose(row, expected / np.linalg.norm(expected), rtol=1e-6)
    # terms outside the vocabulary count for nothing, as in scikit-learn
    np.testing.assert_allclose(tfidf.transform(["b b c zzz qqq"])[0], row, rtol=1e-6)
    for vocab in (multi, count, tfidf):  # no term at all: no crash, nothing of a known term
        assert vocab.transform(["", "!!!"])[:, 2:].sum() == 0


def test_tf_idf_equals_scikit_learn_on_a_cut_vocabulary():
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = ["the tea is good", "the tea is bad", "good good coffee", "bad coffee and tea",
             "a cup of tea", "no coffee"]
    for sublinear in (False, True):  # 1 + ln(count): "good good coffee" tells them apart
        vocab = vocabulary(max_tokens=6, output_mode="tf_idf",
                           sublinear_tf=sublinear).fit(texts)  # 4 of the 11 words
        kept = vocab.terms[2:]
        peer = TfidfVectorizer(vocabulary=kept, token_pattern=r"\S+",
                               sublinear_tf=sublinear).fit(texts)
        np.testing.assert_allclose(vocab.transform(texts + ["tea zzz"])[:, 2:],
                                   peer.transform(texts + ["tea zzz"]).toarray(), atol=1e-6)


def reviews(folder: Path, rows: int = 96, name: str = "reviews.csv") -> Path:
    """Planted reviews: the label is a function of the sentiment words, wrapped in HTML."""
    rng = random.Random(2)
    good, bad = "good great superb love".split(), "bad awful poor hate".split()
    path = folder / name
    with open(path, "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["review", "score"])
        for i in range(rows):
            words = rng.choices(good if i % 2 else bad, k=2) + rng.choices("a the tea".split(), k=3)
            rng.shuffle(words)
            out.writerow([" ".join(words[:3]) + "<br /><br />" + " ".join(words[3:]).upper() + "!",
                          "pos" if i % 2 else "neg"])
    return path


TEXT = """\
name: text
seed: 3
dataset: {{name: text, path: reviews.csv, text_column: review, target: score}}
preprocessing:
  text: {text}
model:
  layers:
{layers}
training: {{epochs: {epochs}, batch_size: 16, optimizer: {{name: adam, learning_rate: 0.02}}}}
"""
SEQUENCE = "{output_mode: int, max_tokens: 40, sequence_length: 8}"
RNN = """\
    - Embedding: {input_dim: 40, output_dim: 8, mask_zero: true}
    - LSTM: {units: 4}
    - Dense: {units: 2, activation: softmax}"""
BAG = "{output_mode: tf_idf, ngrams: 2, max_tokens: 64}"
DENSE = "    - Dense: {units: 2, activation: softmax}"


def text_config(folder: Path, text: str = SEQUENCE, layers: str = RNN, epochs: int = 6) -> Path:
    return write_config(folder, TEXT.format(text=text, layers=layers, epochs=epochs))


def test_token_ids_train_a_masked_rnn_that_evaluates_predicts_and_exports(cli, tmp_path):
    reviews(tmp_path)
    run = tmp_path / "run"
    result = cli("train", text_config(tmp_path), "--run-dir", run, "--quiet")
    assert result.exit_code == 0, result.output
    state = json.loads((run / "preprocessing.json").read_text())
    assert state["kind"] == "text" and state["output_shape"] == [8]
    # 11 words, the padding and the unseen id; the HTML tag and '!' are stripped, case folded
    assert state["vocabulary"]["terms"][:2] == ["", "[UNK]"]
    assert sorted(state["vocabulary"]["terms"][2:]) == sorted(
        "a the tea good great superb love bad awful poor hate".split())
    info = json.loads((run / "run.json").read_text())
    assert info["input_shape"] == [8] and info["class_names"] == ["neg", "pos"]
    report = json.loads((run / "eval.json").read_text())
    assert report["metrics"]["accuracy"] >= 0.9, report
    again = cli("evaluate", run, "--json")
    assert json.loads(again.stdout)["metrics"] == pytest.approx(report["metrics"], abs=1e-6)
    (tmp_path / "new.csv").write_text("review\nsuperb tea<br />LOVE\nawful and poor\n")
    predicted = cli("predict", run, tmp_path / "new.csv")
    assert predicted.exit_code == 0, predicted.output
    assert [r.split(",")[1] for r in predicted.stdout.splitlines()[1:]] == ["pos", "neg"]
    exported = cli("export", run, "--format", "onnx")  # TFLite cannot convert an LSTM's loop
    assert exported.exit_code == 0, exported.output
    assert exported.stdout == f"{run / 'export' / 'model.onnx'}\n"
    assert exported.stderr.startswith("checked: predictions of the onnx export on 8 test "
                                      "samples match the best checkpoint")


def test_the_padding_is_masked_end_to_end():
    """A text padded with more zeros gives the same output: the LSTM never sees the padding."""
    import keras

    from dlmine.config.schema import Config
    from dlmine.data.text import TextSource

    keras.utils.set_random_seed(0)
    cfg = Config()
    cfg.preprocessing.text.sequence_length = 6
    inputs, x = TextSource(cfg.dataset).input_layers(cfg, None, (6,), None)
    embedded = keras.layers.Embedding(10, 4, mask_zero=True)(x)
    model = keras.Model(inputs, keras.layers.LSTM(3)(embedded))
    short = np.array([[4, 5, 0, 0, 0, 0]], dtype="int32")
    padded = np.array([[4, 5, 0, 0, 0, 0], [4, 5, 6, 0, 0, 0]], dtype="int32")
    out = np.asarray(model.predict(padded, verbose=0))
    np.testing.assert_allclose(out[0], np.asarray(model.predict(short, verbose=0))[0], atol=1e-6)
    assert not np.allclose(out[0], out[1])  # the third id counts, the zeros after it do not


def test_a_bag_of_ngrams_trains_a_dense_model(cli, tmp_path):
    reviews(tmp_path)
    run = tmp_path / "run"
    text = BAG.replace("}", ", strip_punctuation: split, sublinear_tf: true}")
    result = cli("train", text_config(tmp_path, text, DENSE, 8), "--run-dir", run, "--quiet")
    assert result.exit_code == 0, result.output
    state = json.loads((run / "preprocessing.json").read_text())
    assert state["output_shape"] == [64] and len(state["vocabulary"]["idf"]) == 64
    # the keys travel with the vocabulary, so predict and export read the texts as training did
    assert state["config"]["text"]["strip_punctuation"] == "split"
    assert state["config"]["text"]["sublinear_tf"] is True
    assert "!" in state["vocabulary"]["terms"]  # each review ends with one
    assert json.loads((run / "eval.json").read_text())["metrics"]["accuracy"] >= 0.9
    (tmp_path / "one.txt").write_text("great good tea", encoding="utf-8")
    predicted = cli("predict", run, tmp_path / "one.txt")
    assert predicted.exit_code == 0, predicted.output
    assert predicted.stdout.splitlines()[1].startswith("0,pos,1,")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "b.txt").write_text("awful bad tea", encoding="utf-8")
    (tmp_path / "folder" / "a.txt").write_text("great good tea", encoding="utf-8")
    (tmp_path / "folder" / "c.txt").write_text("", encoding="utf-8")  # no term: no crash
    folder = cli("predict", run, tmp_path / "folder")
    assert folder.exit_code == 0, folder.output
    lines = folder.stdout.splitlines()
    assert lines[0].startswith("sample,file,class,")
    assert [line.split(",")[:3] for line in lines[1:3]] == [["0", "a.txt", "pos"],
                                                            ["1", "b.txt", "neg"]]
    assert lines[3].startswith("2,c.txt,")
    (tmp_path / "one.jsonl").write_text('{"review": "great"}\n', encoding="utf-8")
    refused = cli("predict", run, tmp_path / "one.jsonl")
    assert refused.exit_code == 2
    assert refused.stderr == (f"Error: {tmp_path / 'one.jsonl'}: a text run predicts a .txt "
                              "file, a folder of .txt files or a CSV (.csv, .csv.gz) with the "
                              "column 'review'; received a '.jsonl' file\n")
    exported = cli("export", run, "--format", "tflite")
    assert exported.exit_code == 0, exported.output
    assert exported.stderr.startswith("checked: predictions of the tflite export on 8 test "
                                      "samples match the best checkpoint")


# Several commands in one process, as `python -m dlmine` runs each: JAX starts once.
COMMANDS = """
import sys
from dlmine.cli import main
for args in sys.argv[1:]:
    sys.argv = ["dlmine", *args.split()]
    code = main(sys.argv[1:], standalone_mode=False)
    if code:
        sys.exit(code)
"""


def test_text_trains_evaluates_predicts_and_exports_on_jax(tmp_path):
    reviews(tmp_path)
    (tmp_path / "new.csv").write_text("review\nsuperb tea<br />LOVE\nawful and poor\n")
    bag = write_config(tmp_path, TEXT.format(text=BAG, layers=DENSE, epochs=8), "bag.yaml")
    commands = [f"train {text_config(tmp_path)} --run-dir {tmp_path / 'rnn'} --quiet",
                f"evaluate {tmp_path / 'rnn'} --quiet",
                f"predict {tmp_path / 'rnn'} {tmp_path / 'new.csv'} --output {tmp_path / 'p.csv'}",
                f"export {tmp_path / 'rnn'} --format keras",
                f"train {bag} --run-dir {tmp_path / 'bag'} --quiet"]
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    out = subprocess.run([sys.executable, "-c", COMMANDS, *commands], capture_output=True,
                         text=True, env=env, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for name in ("rnn", "bag"):
        info = json.loads((tmp_path / name / "run.json").read_text())
        assert info["status"] == "completed" and info["versions"]["backend"] == "jax"
        assert info["final_metrics"]["accuracy"] >= 0.9, info["final_metrics"]
    rows = (tmp_path / "p.csv").read_text().splitlines()[1:]
    assert [r.split(",")[1] for r in rows] == ["pos", "neg"]
    assert (tmp_path / "rnn" / "export" / "model.keras").is_file()


def write_bytes(folder: Path, content: bytes) -> None:
    (folder / "reviews.csv").write_bytes(content)


@pytest.mark.parametrize("content, message", [
    (b"text,score\ngood,pos\n", "reviews.csv: text column 'review' not found (dataset.text_column)"
                                ". Columns: text, score"),
    (b"review,score\n,pos\n  ,neg\n,pos\n,neg\n",
     "reviews.csv: text column 'review' is empty in all 4 rows; expected text (is "
     "dataset.text_column the right column?)"),
    (b"review,score\ngood,pos\ncaf\xe9 bad,neg\n",
     "reviews.csv: cannot read it as UTF-8 text (byte 0xe9 at line 3, column 4, byte offset "
     "25); set dataset.encoding to the file's encoding, e.g. latin-1 or cp1252"),
    (b"review,score\ngood,pos\nbad,pos\nfine,pos\n",
     "reviews.csv: the label column 'score' holds one class only ('pos'); classification needs "
     "at least 2 classes"),
    (b"review,score\ngood,pos\nbad,neg\nfine,pos\nawful,neg\nmeh,meh\n",
     "reviews.csv: class 'meh' has a single sample; expected at least 2 per class (one cannot "
     "be both trained on and tested); remove it or collect more"),
    (b"review,score\ngood,pos\nbad,\n", "reviews.csv: column 'score', row 3: the label is missing"),
    (b"review,rating\ngood,pos\n", "reviews.csv: label column 'score' not found (dataset.target). "
                                   "Columns: review, rating"),
])
def test_text_that_is_not_what_the_config_says_is_named(cli, tmp_path, content, message):
    write_bytes(tmp_path, content)
    result = cli("check", text_config(tmp_path, BAG, DENSE))
    assert result.exit_code == 1, result.output
    assert result.stderr == f"Error: {tmp_path / message}\n"


def test_the_encoding_key_decodes_other_encodings(cli, tmp_path):
    rows = "".join(f"{w} caf\xe9,{'pos' if i % 2 else 'neg'}\n" for i, w in enumerate("abcdefgh"))
    write_bytes(tmp_path, ("review,score\n" + rows).encode("latin-1"))
    cfg = text_config(tmp_path, BAG, DENSE, 1)
    text = cfg.read_text().replace("target: score}", "target: score, encoding: latin-1}")
    run = tmp_path / "run"
    result = cli("train", write_config(tmp_path, text), "--run-dir", run, "--quiet")
    assert result.exit_code == 0, result.output
    assert "café" in json.loads((run / "preprocessing.json").read_text())["vocabulary"]["terms"]


def tagged(folder: Path) -> Path:
    """Texts about tea, coffee or both: each topic word plants its label."""
    rng = random.Random(4)
    path = folder / "tagged.csv"
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["text", "label"])
        for i in range(120):
            labels = [["tea"], ["coffee"], ["coffee", "tea"]][i % 3]
            words = [w for label in labels for w in rng.choices({"tea": ["green", "oolong"],
                     "coffee": ["espresso", "latte"]}[label], k=2)]
            out.writerow([" ".join(words + rng.choices("a cup of".split(), k=3)), "|".join(labels)])
    return path


MULTI = """\
name: tagged
seed: 5
dataset: {name: text, path: tagged.csv, task: multi_label}
preprocessing:
  text: {output_mode: multi_hot, max_tokens: 20}
model:
  layers:
    - Dense: {units: 2, activation: sigmoid}
training: {epochs: 30, batch_size: 16, optimizer: {name: adam, learning_rate: 0.05}}
"""


def test_multi_label_texts_get_every_label_above_the_threshold(cli, tmp_path):
    tagged(tmp_path)
    run = tmp_path / "run"
    result = cli("train", write_config(tmp_path, MULTI), "--run-dir", run, "--quiet")
    assert result.exit_code == 0, result.output
    config = (run / "config.yaml").read_text()
    assert "loss: binary_crossentropy" in config and "metrics: [binary_accuracy]" in config
    report = json.loads((run / "eval.json").read_text())
    assert set(report["per_label"]) == {"coffee", "tea"}
    assert set(report["per_label"]["tea"]) == {"precision", "recall", "f1", "support"}
    assert report["micro_f1"] >= 0.95 and report["macro_f1"] >= 0.95, report
    assert report["threshold"] == 0.5
    (tmp_path / "new.csv").write_text("text\ngreen oolong\nlatte espresso\noolong latte a cup\n")
    predicted = cli("predict", run, tmp_path / "new.csv")
    assert predicted.exit_code == 0, predicted.output
    lines = predicted.stdout.splitlines()
    assert lines[0] == "sample,labels,prob_coffee,prob_tea"
    assert [line.split(",")[1] for line in lines[1:]] == ["tea", "coffee", "coffee|tea"]


@pytest.mark.parametrize(("dataset", "text", "layers", "messages"), [
    (", task: regression", "{output_mode: int, max_tokens: 2, sequence_length: 8}", RNN,
     ["cfg.yaml:3: dataset.task: text is classified: expected classification or multi_label, "
      "received regression",
      "cfg.yaml:5: preprocessing.text.max_tokens: expected an integer >= 3: the padding id, the "
      "unseen-term id and at least one term, received 2 (integer)"]),
    ("", "{output_mode: int, max_tokens: 50, sequence_length: 8}", RNN,
     ["cfg.yaml:8: model.layers[0].Embedding.input_dim: expected at least "
      "preprocessing.text.max_tokens (50) ids, received 40: ids 40 and up would fall outside "
      "the embedding"]),
    ("", "{output_mode: count, max_tokens: 40}", RNN,
     ["cfg.yaml:8: model.layers[0].Embedding: an Embedding reads token ids, but "
      "preprocessing.text.output_mode is count (a bag of floats per text); use output_mode: "
      "int, or Dense layers"]),
    ("", "{output_mode: count, max_tokens: 40, sublinear_tf: true}", DENSE,
     ["cfg.yaml:5: preprocessing.text.sublinear_tf: sublinear_tf damps the counts of tf_idf, "
      "but preprocessing.text.output_mode is count; use output_mode: tf_idf, or remove "
      "sublinear_tf"]),
])
def test_text_configs_that_cannot_work_are_refused_before_the_data(cli, tmp_path, dataset, text,
                                                                   layers, messages):
    config = TEXT.replace("target: score}}", "target: score" + dataset + "}}")
    path = write_config(tmp_path, config.format(text=text, layers=layers, epochs=1))
    result = cli("check", path)  # reviews.csv does not exist: refused before it is read
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {len(messages)} problem{'s' if len(messages) > 1 else ''} "
                             "in the config:\n" + "".join(f"  {tmp_path / m}\n" for m in messages))


def test_multi_label_needs_a_sigmoid_not_a_softmax(cli, tmp_path):
    tagged(tmp_path)
    text = MULTI.replace("units: 2, activation: sigmoid", "units: 2, activation: softmax")
    result = cli("check", write_config(tmp_path, text))
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: 1 problem in the config:\n  {tmp_path / 'cfg.yaml'}:8: model.layers[0].Dense: "
        "dataset.task: multi_label needs one sigmoid output per label (each label is yes or no "
        "on its own), received activation: softmax; set activation: sigmoid\n")


def test_multi_label_needs_one_sigmoid_output_per_label(cli, tmp_path):
    tagged(tmp_path)
    text = MULTI.replace("units: 2, activation: sigmoid", "units: 1, activation: sigmoid")
    result = cli("check", write_config(tmp_path, text))
    assert result.exit_code == 2
    cfg = tmp_path / "cfg.yaml"
    assert result.stderr == (
        f"Error: 1 problem in the config:\n  {cfg}:8: model.layers[0].Dense: the model's output "
        "has shape (None, 1), but the data has 2 labels and dataset.task: multi_label needs one "
        "sigmoid output per label: expected (None, 2); set units: 2\n")

