"""Config validation, resolution and overrides, seen through `dlmine check` and `load_config`.

Every broken config must end in one clear `Error:` with exit code 2 and a line
`FILE:LINE: dotted.key: message`, never a traceback. The corpus of broken configs
lives in `tests/broken/`: each file's first line is `# expect: <the problem line>`,
with line numbers counted in that file (the `# expect:` line is line 1).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from dlmine.config import to_yaml
from dlmine.config.loading import shorten, suggest
from dlmine.errors import ConfigError
from dlmine.model.checks import load_checked_config
from tests.conftest import TINY_CONFIG, write_config

BROKEN = Path(__file__).resolve().parent / "broken"
CORPUS = sorted(BROKEN.glob("*.yaml"))
EXPECT = "# expect: "

ONE_PROBLEM = "Error: 1 problem in the config:\n"
TAG_MESSAGE = ("the tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed: dlmine "
               "reads plain YAML only (yaml.safe_load) and never builds Python objects; nothing "
               "was executed")
BOMB_MESSAGE = ("the YAML expands to more than 100000 nodes through anchors and aliases; refused "
                "(a billion-laughs document?)")
TRAINING_KEYS = ("epochs, batch_size, optimizer, loss, metrics, early_stopping, "
                 "reduce_lr_on_plateau, class_weight, checkpoint, shuffle, deterministic, "
                 "jit_compile, mixed_precision, tensorboard, steps_per_execution, distribution, "
                 "tracking")
SET_SYNTAX = ("expected KEY=VALUE with a dotted key such as training.epochs=5 or "
              "model.layers[0].Dense.units=64")
OUTPUT_5_UNITS = ("the model's output has shape (None, 5), but the data has 3 classes and the "
                  "loss sparse_categorical_crossentropy needs one output per class: expected "
                  "(None, 3); set units: 3")
UNITS_TEN = ("Dense(units='ten', activation='relu') was refused by Keras: Received an invalid "
             "value for `units`, expected a positive integer. Received: units=ten")


# --- helpers ------------------------------------------------------------------------------------

@pytest.fixture
def here(tmp_path, monkeypatch, tiny_npz) -> Path:
    """Work in `tmp_path` (beside `tiny.npz`), so that messages name `cfg.yaml`."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tiny(old: str = "", new: str = "", extra: str = "") -> str:
    """TINY_CONFIG with one replacement (which must exist) and `extra` appended."""
    assert old in TINY_CONFIG
    return TINY_CONFIG.replace(old, new) + extra


def check(cli, folder: Path, text: str, *args: str):
    """Write `text` as `folder/cfg.yaml` and run `dlmine check cfg.yaml ARGS...`."""
    write_config(folder, text)
    return cli("check", "cfg.yaml", *args)


def problems_of(result) -> list[str]:
    """The problem lines of a failed `check`, after asserting how it failed."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "internal error" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "Error: 1 problem in the config:" or re.fullmatch(
        r"Error: \d+ problems in the config:", lines[0]), lines
    assert all(line.startswith("  ") for line in lines[1:]), lines
    return [line[2:] for line in lines[1:]]


def only_problem(result) -> str:
    lines = problems_of(result)
    assert len(lines) == 1, lines
    return lines[0]


def load(folder: Path, text: str, *overrides: str):
    return load_checked_config(write_config(folder, text), overrides).config


def laughs(levels: int, flow: bool = False) -> str:
    """A billion-laughs document: `levels` anchors, each 10 aliases of the one before."""
    if flow:
        items = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
        return "[" + ", ".join(items) + "]"
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


# --- 1. the corpus of broken configs ------------------------------------------------------------

def expected_line(case: Path) -> str:
    first = case.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(EXPECT), f"{case.name} must start with '{EXPECT}<problem line>'"
    return first[len(EXPECT):]


def test_corpus_is_large_and_self_describing():
    assert len(CORPUS) >= 20
    for case in CORPUS:
        assert expected_line(case).startswith("cfg.yaml:")


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: case.stem)
def test_broken_config_ends_in_one_clear_message(case, cli, here):
    result = check(cli, here, case.read_text(encoding="utf-8"))
    assert result.exit_code == 2, result.output
    assert result.stderr == f"{ONE_PROBLEM}  {expected_line(case)}\n"
    assert result.stdout == ""
    assert "Traceback" not in result.output


# --- message details the corpus does not show -----------------------------------------------------

@pytest.mark.parametrize("text, kind", [("5\n", "an integer"), ("hello\n", "a string")])
def test_top_level_scalar_is_named_as_a_user_reads_it(cli, here, text, kind):
    assert only_problem(check(cli, here, text)) == (
        "cfg.yaml:1: expected a mapping with the sections dataset, model, training; "
        f"received {kind}")


@pytest.mark.parametrize("text, prefix, valid", [
    (tiny(extra="zzzqqq: 1\n"), "cfg.yaml:15: zzzqqq: unknown key",
     r" keys: name, seed, dataset, preprocessing, model, training, tune"),
    (tiny("units: 8,", "zzzqqq: 8, units: 8,"),
     "cfg.yaml:10: model.layers[1].Dense.zzzqqq: Dense has no argument 'zzzqqq'",
     r": activation, .*, units, use_bias"),
    (tiny(extra="  optimizer: zzzqqq\n"),
     "cfg.yaml:15: training.optimizer: unknown optimizer 'zzzqqq'", r": adadelta, .*, sgd"),
], ids=["key", "layer-argument", "optimizer"])
def test_unknown_name_without_suggestion_still_reads_as_sentences(cli, here, text, prefix, valid):
    # With a suggestion: "...; did you mean 'epochs'? Valid keys: ...". Without one, the
    # list of valid names must still be separated from the message ("...'zzzqqq'. Valid: ...").
    line = only_problem(check(cli, here, text))
    assert re.fullmatch(re.escape(prefix) + r"[.;:,] [Vv]alid" + valid, line), line


@pytest.mark.parametrize("name, choices, expected", [
    ("epoch", ["epochs", "seed"], "; did you mean 'epochs'?"),  # close by difflib
    ("SEED", ["epochs", "seed"], "; did you mean 'seed'?"),  # another case
    ("acc", ["loss", "accuracy"], "; did you mean 'accuracy'?"),  # an abbreviation of one name
    ("val_acc", ["val_loss", "val_accuracy"], "; did you mean 'val_accuracy'?"),
    ("Dens", ["Dense", "DenseNet", "Dropout"], "; did you mean 'Dense'?"),
    ("ac", ["accuracy", "loss"], ""),  # too short to be read as an abbreviation
    ("pre", ["precision", "preprocessing"], ""),  # the abbreviation of two names
])
def test_suggest_names_the_nearest_valid_name_or_nothing(name, choices, expected):
    assert suggest(name, choices) == expected


def test_class_weight_problem_points_at_its_own_line(cli, here):
    text = tiny(extra="  class_weight:\n    0: 1.0\n    1: 1.0\n    2: -1\n")
    line = only_problem(check(cli, here, text))
    assert re.fullmatch(r"cfg\.yaml:18: training\.class_weight(\[2\]|\.2): expected a weight > 0, "
                        r"received -1", line), line


def test_layer_name_that_is_not_a_string_is_named_as_the_problem(cli, here):
    line = only_problem(check(cli, here, tiny("- Flatten", "- {5: {units: 3}}")))
    assert line.startswith("cfg.yaml:9: model.layers[0]"), line
    # the arguments {units: 3} are a fine mapping: the name 5 is what is wrong
    assert "expected the layer's arguments as a mapping" not in line


def test_optimizer_mapping_without_name_is_one_problem(cli, here):
    result = check(cli, here, tiny(extra="  optimizer: {learning_rate: 0.1}\n"))
    assert problems_of(result) == [
        "cfg.yaml:15: training.optimizer: expected `name:` (a keras.optimizers name such as "
        "adam) in the optimizer mapping, received keys ['learning_rate']"]


def test_output_of_wrong_rank_is_not_blamed_on_units(cli, here):
    # No Flatten: Dense(3) on (None, 6, 6) gives (None, 6, 3); units is already 3.
    line = only_problem(check(cli, here, tiny("    - Flatten\n")))
    assert line.startswith("cfg.yaml:10: model.layers[1].Dense: the model's output has shape "
                           "(None, 6, 3)"), line
    assert "set units: 3" not in line
    assert "Flatten" in line


def test_single_sigmoid_output_needs_two_classes(cli, here):
    # loss auto -> binary_crossentropy, but tiny.npz has 3 classes
    text = tiny("units: 3, activation: softmax", "units: 1, activation: sigmoid")
    result = check(cli, here, text)
    line = only_problem(result)
    assert line.startswith("cfg.yaml:11: model.layers[2].Dense: "), line
    assert "3 classes" in line


def test_monitor_must_name_a_metric_that_is_logged(cli, here):
    result = check(cli, here, tiny(extra="  early_stopping: {monitor: val_acuracy}\n"))
    line = only_problem(result)
    assert line.startswith("cfg.yaml:15: training.early_stopping.monitor: "), line
    assert "'val_acuracy'" in line


def test_duplicate_key_is_refused(cli, here):
    result = check(cli, here, tiny("  epochs: 2\n", "  epochs: 2\n  epochs: 3\n"))
    line = only_problem(result)
    assert line.startswith("cfg.yaml:14: training.epochs: "), line
    assert "duplicate" in line.lower()


# --- 2. all problems at once --------------------------------------------------------------------

MANY_PROBLEMS = """\
training:
  epoch: 2
  batch_size: 0
  optimizer: adamm
  loss: categorical_crossentropyy
  metrics: [acuracy]
model:
  layers:
    - Flaten
    - Dense: {unit: 3, activation: softmax}
dataset:
  name: mnst
  validation_split: 1.5
seed: one
"""


def test_all_problems_are_reported_at_once_in_reading_order(cli, here):
    # Found in schema order (seed, dataset, training, then layers, optimizer, loss, metrics);
    # reported in the file's order.
    result = check(cli, here, MANY_PROBLEMS)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "Error: 10 problems in the config:\n"
        f"  cfg.yaml:2: training.epoch: unknown key; did you mean 'epochs'? Valid keys: "
        f"{TRAINING_KEYS}\n"
        "  cfg.yaml:3: training.batch_size: expected an integer >= 1, received 0 (integer)\n"
        "  cfg.yaml:4: training.optimizer: unknown optimizer 'adamm'; did you mean 'adam'? "
        "Valid: adadelta, adafactor, adagrad, adam, adamax, adamw, ftrl, lamb, lion, muon, nadam, "
        "rmsprop, schedulefreeadamw, sgd\n"
        "  cfg.yaml:5: training.loss: unknown loss 'categorical_crossentropyy'; did you mean "
        "'categorical_crossentropy'?\n"
        "  cfg.yaml:6: training.metrics[0]: unknown metric 'acuracy'; did you mean 'accuracy'?\n"
        "  cfg.yaml:9: model.layers[0].Flaten: unknown layer 'Flaten'; did you mean 'Flatten'?\n"
        "  cfg.yaml:10: model.layers[1].Dense.unit: Dense has no argument 'unit'; did you mean "
        "'units'? Valid: " + _dense_arguments() + "\n"
        "  cfg.yaml:12: dataset.name: expected one of: mnist, fashion_mnist, cifar10, cifar100, "
        "digits, npz, csv, parquet, text, images, interactions, received 'mnst' (string); did you "
        "mean 'mnist'?\n"
        "  cfg.yaml:13: dataset.validation_split: expected a fraction in (0, 1), or null for no "
        "validation split, received 1.5 (number)\n"
        "  cfg.yaml:14: seed: expected an integer, received 'one' (string)\n")
    assert "Traceback" not in result.output


def test_cross_field_problems_are_reported_with_type_problems(cli, here):
    # README: "Every problem of a config is reported at once". batch_size has nothing to do
    # with the loss, so the loss rule can judge a loss and labels that are both well typed.
    text = tiny("batch_size: 16", "batch_size: 0", "  loss: categorical_crossentropy\n")
    assert problems_of(check(cli, here, text)) == [
        "cfg.yaml:14: training.batch_size: expected an integer >= 1, received 0 (integer)",
        "cfg.yaml:15: training.loss: categorical_crossentropy expects one-hot labels, but "
        "preprocessing.labels is 'integer'; use sparse_categorical_crossentropy, or set "
        "preprocessing.labels: onehot",
    ]


def _dense_arguments() -> str:
    from dlmine.model.registry import allowed_arguments, layer_registry

    return ", ".join(sorted(allowed_arguments(layer_registry()["Dense"])))


def test_a_set_value_that_is_only_a_comment_is_null(cli, here):
    line = only_problem(check(cli, here, TINY_CONFIG, "--set", "training.epochs=#c"))
    assert line == "--set training.epochs=#c: training.epochs: expected an integer, received " \
        "null"


def test_set_problems_come_before_the_files(cli, here):
    text = tiny("batch_size: 16", "batch_size: 0")
    lines = problems_of(check(cli, here, text, "--set", "foo", "--set", "training.epochs=two"))
    assert lines == [
        f"--set foo: {SET_SYNTAX}",
        "--set training.epochs=two: training.epochs: expected an integer, received 'two' (string)",
        "cfg.yaml:14: training.batch_size: expected an integer >= 1, received 0 (integer)",
    ]


# --- 3. --set overrides -------------------------------------------------------------------------

def test_set_changes_the_resolved_value(here):
    loaded = load_checked_config(write_config(here, TINY_CONFIG), ["training.epochs=1"])
    assert loaded.config.training.epochs == 1
    assert loaded.sources.where(("training", "epochs")) == "--set training.epochs=1"
    assert loaded.sources.where(("training", "batch_size")) == "cfg.yaml:14"


def test_a_problem_under_a_set_mapping_points_at_the_set_not_the_file(here):
    """The file's model.layers[1] is replaced whole: its line no longer says where."""
    item = "model.layers=[Flatten, {Dense: {units: 3}}]"
    loaded = load_checked_config(write_config(here, TINY_CONFIG), [item])
    assert loaded.sources.where(("model", "layers", 1, "Dense", "units")) == f"--set {item}"
    assert loaded.sources.where(("model",)) == f"--set {item}"


def test_a_date_in_yaml_is_the_text_written(here):
    loaded = load_checked_config(write_config(here, TINY_CONFIG), ["name=2021-06-01"])
    assert loaded.config.name == "2021-06-01"


def test_set_reaches_into_the_layer_list(cli, here):
    config = load(here, TINY_CONFIG, "model.layers[1].Dense.units=16")
    assert config.model.layers[1] == {"Dense": {"units": 16, "activation": "relu"}}
    result = check(cli, here, TINY_CONFIG, "--set", "model.layers[1].Dense.units=16")
    assert result.exit_code == 0, result.output
    # Flatten 36 -> Dense 16 (36*16 + 16) -> Dense 3 (16*3 + 3)
    assert result.stdout.splitlines()[-1] == (
        "cfg.yaml: OK: 3 layers, input shape (6, 6), 643 parameters")


@pytest.mark.parametrize("item, attribute, value", [
    ("dataset.validation_split=null", "dataset.validation_split", None),
    ("dataset.validation_split=null", "training.checkpoint.monitor", "loss"),
    ("training.metrics=[accuracy, mae]", "training.metrics", ["accuracy", "mae"]),
    ("training.optimizer={name: sgd, momentum: 0.9}", "training.optimizer",
     {"name": "sgd", "momentum": 0.9}),
    ("training.shuffle=false", "training.shuffle", False),
    ("preprocessing.rescale=1/255", "preprocessing.rescale", 1 / 255),
    ("name=other", "name", "other"),
    (" training.epochs = 7", "training.epochs", 7),
    ("training.early_stopping.patience=3", "training.early_stopping.patience", 3),
])
def test_set_values_are_parsed_as_yaml(here, item, attribute, value):
    config = load(here, TINY_CONFIG, item)
    for part in attribute.split("."):
        config = getattr(config, part)
    assert config == value


def test_set_unknown_key_is_reported_with_a_suggestion(cli, here):
    result = check(cli, here, TINY_CONFIG, "--set", "training.epoch=3")
    assert result.exit_code == 2
    assert result.stderr == (
        f"{ONE_PROBLEM}  --set training.epoch=3: training.epoch: unknown key; did you mean "
        f"'epochs'? Valid keys: {TRAINING_KEYS}\n")


@pytest.mark.parametrize("item", ["foo", "=3", "training..epochs=1", "training.epochs",
                                  "model.layers[x]=1", "9lives=1"])
def test_malformed_set_is_reported(cli, here, item):
    line = only_problem(check(cli, here, TINY_CONFIG, "--set", item))
    assert line == f"--set {item}: {SET_SYNTAX}"


@pytest.mark.parametrize("item, message", [
    ("model.layers[9].Dense.units=5",
     "model.layers[9].Dense.units: model.layers[9] does not exist (the list is shorter)"),
    ("dataset.name.x=1", "dataset.name.x: dataset.name is not a mapping, so it has no key 'x'"),
    ("training.metrics[0]=mae",
     "training.metrics[0]: training.metrics is not a list in the config"),
])
def test_set_into_a_path_that_does_not_exist(cli, here, item, message):
    assert only_problem(check(cli, here, TINY_CONFIG, "--set", item)) == f"--set {item}: {message}"


@pytest.mark.parametrize("item, message", [
    ("model.layers[2].Dense.units=5", f"model.layers[2].Dense: {OUTPUT_5_UNITS}"),
    ("model.layers[1].Dense.units=ten", f"model.layers[1].Dense: {UNITS_TEN}"),
])
def test_problem_from_a_set_value_is_blamed_on_the_set(cli, here, item, message):
    # The file says units: 3 and units: 8; only the --set is wrong, so it is the source.
    assert only_problem(check(cli, here, TINY_CONFIG, "--set", item)) == f"--set {item}: {message}"


# --- 4. hostile YAML ----------------------------------------------------------------------------

@pytest.mark.parametrize("template, line", [
    ('!!python/object/apply:os.system ["touch {marker}"]\n', "cfg.yaml:1: "),
    ('name: tiny\nseed: !!python/object/apply:os.system ["touch {marker}"]\n',
     "cfg.yaml:2: seed: "),
], ids=["document", "value"])
def test_python_tag_is_refused_and_nothing_runs(cli, here, template, line):
    marker = here / "pwned"
    result = check(cli, here, template.format(marker=marker))
    assert result.stderr == f"{ONE_PROBLEM}  {line}{TAG_MESSAGE}\n"
    assert result.exit_code == 2
    assert not marker.exists()


def test_python_tag_in_set_is_refused_and_nothing_runs(cli, here):
    marker = here / "pwned"
    item = f'seed=!!python/object/apply:os.system ["touch {marker}"]'
    line = only_problem(check(cli, here, TINY_CONFIG, "--set", item))
    assert line == f"--set {shorten(item)}: seed: {TAG_MESSAGE}"  # a long value is cut
    assert not marker.exists()


def test_billion_laughs_is_refused_quickly(cli, here):
    start = time.monotonic()
    result = check(cli, here, laughs(9))
    assert time.monotonic() - start < 5
    assert result.exit_code == 2
    assert result.stderr == f"{ONE_PROBLEM}  cfg.yaml:1: {BOMB_MESSAGE}\n"


def test_billion_laughs_in_set_is_refused_quickly(cli, here):
    item = f"seed={laughs(7, flow=True)}"  # 10**7 nodes once expanded
    start = time.monotonic()
    result = check(cli, here, TINY_CONFIG, "--set", item)
    assert time.monotonic() - start < 5
    assert BOMB_MESSAGE in only_problem(result)


def test_deep_nesting_beyond_python_is_refused(cli, here):
    result = check(cli, here, "[" * 5000 + "]" * 5000 + "\n")
    assert result.exit_code == 2
    assert result.stderr == (f"{ONE_PROBLEM}  cfg.yaml:1: the YAML nests deeper than Python can "
                             "parse; a dlmine config nests a few levels\n")
    assert "Traceback" not in result.output


def test_deep_nesting_beyond_the_limit_is_refused(cli, here):
    result = check(cli, here, "seed: " + "[" * 100 + "]" * 100 + "\n")
    assert only_problem(result) == ("cfg.yaml:1: seed" + "[0]" * 64
                                    + ": nested deeper than 64 levels; refused")


def test_deep_nesting_in_set_is_refused(cli, here):
    item = "seed=" + "[" * 5000 + "]" * 5000
    line = only_problem(check(cli, here, TINY_CONFIG, "--set", item))
    assert line.startswith(f"--set {shorten(item)}: "), line[:100]
    assert re.search(r"nest(s|ed) deeper than", line), line[-200:]


def test_file_over_one_mebibyte_is_refused(cli, here):
    text = TINY_CONFIG + "# " + "x" * (1024 * 1024) + "\n"
    result = check(cli, here, text)
    assert result.exit_code == 2
    assert result.stderr == (f"{ONE_PROBLEM}  cfg.yaml:1: the file is larger than 1048576 bytes; "
                             "a dlmine config is a few hundred lines\n")


def test_missing_file_is_a_usage_error_not_a_traceback(cli, here):
    result = cli("check", "nowhere.yaml")
    assert result.exit_code == 2
    assert result.stderr == "Error: config file not found: nowhere.yaml\n"


def test_file_outside_the_working_directory_is_named_as_given(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    path = write_config(tmp_path, tiny("epochs: 2", "epochs: 0"))
    with pytest.raises(ConfigError) as caught:
        load_checked_config(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:13: training.epochs: expected an integer >= 1, received 0 (integer)"]


# --- 5. resolution ------------------------------------------------------------------------------

REGRESSION = tiny("units: 3, activation: softmax", "units: 1").replace(
    "  validation_split: 0.25\n", "  validation_split: 0.25\n  task: regression\n")


@pytest.mark.parametrize("text, loss, metrics", [
    (TINY_CONFIG, "sparse_categorical_crossentropy", ["accuracy"]),
    (tiny("model:", "preprocessing:\n  labels: onehot\nmodel:"), "categorical_crossentropy",
     ["accuracy"]),
    (tiny("units: 3, activation: softmax", "units: 1, activation: sigmoid"),
     "binary_crossentropy", ["accuracy"]),
    (REGRESSION, "mean_squared_error", ["mean_absolute_error"]),
], ids=["integer-labels", "onehot-labels", "one-sigmoid", "regression"])
def test_auto_loss_and_default_metrics(here, text, loss, metrics):
    training = load(here, text).training
    assert (training.loss, training.metrics) == (loss, metrics)


def test_explicit_loss_and_metrics_are_kept(here):
    training = load(here, tiny(extra="  loss: sparse_categorical_crossentropy\n"
                                     "  metrics: [accuracy, sparse_top_k_categorical_accuracy]\n"
                               )).training
    assert training.loss == "sparse_categorical_crossentropy"
    assert training.metrics == ["accuracy", "sparse_top_k_categorical_accuracy"]


CALLBACKS = "  early_stopping: {}\n  reduce_lr_on_plateau: {}\n"


@pytest.mark.parametrize("split, monitor", [("0.25", "val_loss"), ("null", "loss")])
def test_monitors_default_to_the_validation_loss_if_there_is_one(here, split, monitor):
    text = tiny("validation_split: 0.25", f"validation_split: {split}", CALLBACKS)
    training = load(here, text).training
    assert training.early_stopping.monitor == monitor
    assert training.reduce_lr_on_plateau.monitor == monitor
    assert training.checkpoint.monitor == monitor


def test_explicit_monitor_is_kept_and_callbacks_default_to_off(here):
    training = load(here, tiny(extra="  early_stopping: {monitor: val_accuracy}\n")).training
    assert training.early_stopping.monitor == "val_accuracy"
    assert training.reduce_lr_on_plateau is None


def test_rescale_fraction_becomes_a_number(here):
    rescale = load(here, tiny("model:", "preprocessing:\n  rescale: 1/255\nmodel:")
                   ).preprocessing.rescale
    assert rescale == 1 / 255
    assert repr(rescale).startswith("0.00392156")


@pytest.mark.parametrize("optimizer, resolved", [
    (None, {"name": "adam", "learning_rate": 0.001}),
    ("sgd", {"name": "sgd"}),
    ("{name: rmsprop, learning_rate: 0.01}", {"name": "rmsprop", "learning_rate": 0.01}),
])
def test_optimizer_becomes_a_mapping(here, optimizer, resolved):
    extra = f"  optimizer: {optimizer}\n" if optimizer else ""
    assert load(here, tiny(extra=extra)).training.optimizer == resolved


def test_name_defaults_to_the_file_name_and_path_to_an_absolute_one(here, tiny_npz):
    path = write_config(here, tiny("name: tiny\n"), name="my-experiment.yaml")
    config = load_checked_config(path).config
    assert config.name == "my-experiment"
    assert config.dataset.path == str(tiny_npz.resolve())


ROUND_TRIP = tiny("model:", "preprocessing:\n  rescale: 1/255\n  labels: onehot\nmodel:", """\
  optimizer: sgd
  early_stopping: {patience: 2}
  class_weight: {0: 1.0, 1: 2.5, 2: 1}
""")


def test_to_yaml_loads_again_to_the_same_config(here):
    first = load_checked_config(write_config(here, ROUND_TRIP))
    again = here / "again"
    again.mkdir()
    second = load_checked_config(write_config(again, to_yaml(first.config), name="saved.yaml"))
    assert second.config == first.config
    assert to_yaml(second.config) == to_yaml(first.config)
    assert first.config.training.loss == "categorical_crossentropy"
    assert first.config.training.class_weight == {0: 1.0, 1: 2.5, 2: 1}


# --- 6. a good config ---------------------------------------------------------------------------

def test_check_of_a_good_config_prints_the_model_and_ok(cli, tiny_config, monkeypatch):
    monkeypatch.chdir(tiny_config.parent)
    result = cli("check", tiny_config.name)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == 'Model: "tiny"'
    assert any("flatten (Flatten)" in line and "(None, 36)" in line for line in lines)
    assert any("dense_1 (Dense)" in line and "(None, 3)" in line for line in lines)
    assert lines[-1] == "cfg.yaml: OK: 3 layers, input shape (6, 6), 323 parameters"


# --- answering without Keras ----------------------------------------------------------------------

def test_the_shipped_keras_catalogue_is_what_the_installed_keras_offers():
    import json

    from dlmine.model.catalogue import FILE, live, shipped

    assert json.loads(FILE.read_text()) == live(), \
        "regenerate it: python -m dlmine.model.catalogue --write"
    assert shipped() is not None  # written for the installed Keras version


def test_a_wrong_config_is_answered_without_importing_keras_or_its_backend(tmp_path):
    import subprocess
    import sys

    cfg = write_config(tmp_path, "name: wrong\ndataset: {name: digits}\nmodel:\n  layers:\n"
                       "    - Flaten\n    - Dense: {units: 10, activation: softmaxx}\n"
                       "training:\n  optimizer: {name: adamm}\n  epocs: 3\n")
    probe = ("import sys\nfrom dlmine.cli import main\n"
             f"code = main(['check', {str(cfg)!r}], standalone_mode=False)\n"
             "heavy = sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules)\n"
             "print(code, heavy)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout == "2 []\n"
    assert done.stderr == (
        "Error: 4 problems in the config:\n"
        f"  {cfg}:5: model.layers[0].Flaten: unknown layer 'Flaten'; did you mean 'Flatten'?\n"
        f"  {cfg}:6: model.layers[1].Dense.activation: unknown activation 'softmaxx'; did you "
        "mean 'softmax'?\n"
        f"  {cfg}:8: training.optimizer.name: unknown optimizer 'adamm'; did you mean 'adam'? "
        "Valid: " + ", ".join(sorted(_catalogue()["optimizers"])) + "\n"
        f"  {cfg}:9: training.epocs: unknown key; did you mean 'epochs'? Valid keys: "
        + ", ".join(_training_keys()) + "\n")


def test_values_keras_refuses_are_named_once_the_names_are_right(cli, tmp_path):
    cfg = write_config(tmp_path, "name: t\ndataset: {name: digits}\nmodel:\n  layers:\n"
                       "    - Flatten\n    - Dropout: {rate: 2}\n"
                       "    - Dense: {units: 10, activation: softmax}\n")
    result = cli("check", cfg)
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: 1 problem in the config:\n  {cfg}:6: model.layers[1].Dropout: Dropout(rate=2) was "
        "refused by Keras: Invalid value received for argument `rate`. Expected a float value "
        "between 0 and 1. Received: rate=2\n")


def _catalogue() -> dict:
    from dlmine.model.catalogue import shipped

    return shipped()


def _training_keys() -> list[str]:
    import dataclasses

    from dlmine.config.schema import TrainingConfig

    return [f.name for f in dataclasses.fields(TrainingConfig)]


def test_mode_auto_follows_the_direction_keras_gives_each_metric():
    """One rule for `mode: auto` (checkpoint, early stopping, tune.direction): Keras' own, the
    `_direction` of its metric classes, for every metric name a config may give."""
    import inspect

    import keras

    from dlmine.config.checks import monitor_mode
    from dlmine.model.catalogue import live

    checked = 0
    for name in live()["metrics"]:
        try:
            metric = keras.metrics.get(name)
        except ValueError:  # a loss name Keras accepts in `metrics=` but not in `metrics.get`
            continue
        if inspect.isclass(metric):
            metric = metric()
        direction = getattr(metric, "_direction", None)
        if direction is None:  # a plain function: Keras cannot tell either
            continue
        assert monitor_mode(name) == ("max" if direction == "up" else "min"), name
        assert monitor_mode(f"val_{name}") == monitor_mode(name)
        checked += 1
    assert checked >= 10
    assert monitor_mode("loss") == monitor_mode("val_loss") == "min"


# --- what user-testing from README found (2026-12-04) ---------------------------------------

@pytest.mark.parametrize("written, value", [("1e-3", 1e-3), ("5E4", 5e4), ("-2.5e-1", -0.25)])
def test_a_number_in_exponent_form_is_a_number_unless_quoted(here, written, value):
    """YAML 1.1 (PyYAML) reads `1e-3` as text for want of a dot; YAML 1.2, and users, a number."""
    config = load(here, tiny("batch_size: 16", f"batch_size: 16\n  optimizer: {{name: adam, "
                             f"learning_rate: {written}}}"))
    assert config.training.optimizer["learning_rate"] == value


def test_a_quoted_exponent_stays_text(here):
    assert load(here, tiny("name: tiny", "name: '1e3'")).name == "1e3"


def test_an_exponent_in_set_is_a_number_too(here):
    assert load(here, TINY_CONFIG, "training.optimizer.learning_rate=3e-4"
                ).training.optimizer["learning_rate"] == 3e-4


def test_a_set_flow_value_that_is_not_yaml_is_its_yaml_error(cli, here):
    line = only_problem(check(cli, here, TINY_CONFIG, "--set", "training.epochs={a: [1"))
    assert line == ("--set training.epochs={a: [1: training.epochs: invalid YAML: while parsing "
                    "a flow sequence, expected ',' or ']', but got '<stream end>'")


def test_a_set_through_a_misspelt_layer_name_suggests_the_layer(cli, here):
    line = only_problem(check(cli, here, TINY_CONFIG, "--set", "model.layers[1].Dens.units=3"))
    assert line == ("--set model.layers[1].Dens.units=3: model.layers[1].Dens.units: "
                    "model.layers[1] is a Dense layer, so it has no 'Dens'; did you mean 'Dense'?")


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_a_seed_keras_cannot_take_is_a_config_problem(cli, here, seed):
    line = only_problem(check(cli, here, TINY_CONFIG, "--set", f"seed={seed}"))
    assert line == (f"--set seed={seed}: seed: expected an integer from 0 to 2**32 - 1 "
                    f"(4294967295), received {seed} (integer)")


def test_class_metrics_are_known_by_the_names_keras_logs(here):
    config = load(here, tiny("Dense: {units: 3, activation: softmax}",
                             "Dense: {units: 3, activation: softmax}",
                             "  metrics: [accuracy, sparse_top_k_categorical_accuracy]\n"))
    assert config.training.metrics == ["accuracy", "sparse_top_k_categorical_accuracy"]
    assert {"auc", "precision", "recall", "f1_score", "root_mean_squared_error",
            "r2_score"} <= set(_catalogue()["metrics"])


def test_a_metric_that_does_not_fit_the_labels_is_named_before_training(cli, here):
    line = only_problem(check(cli, here, TINY_CONFIG, "--set", "training.metrics=[accuracy, auc]"))
    assert line == ("--set training.metrics=[accuracy, auc]: training.metrics[1]: 'auc' compares "
                    "each output with a 0/1 label, but this classifier gives one softmax output "
                    "per class (None, 3) against class indices; for a 2-class problem, one "
                    "sigmoid output (units: 1, activation: sigmoid, loss: binary_crossentropy) "
                    "has the labels it needs")


def test_a_misspelt_word_of_a_key_that_also_takes_true_or_false_is_suggested(cli, here):
    text = tiny("batch_size: 16", "batch_size: 16\n  mixed_precision: aut")
    assert problems_of(check(cli, here, text)) == [
        "cfg.yaml:15: training.mixed_precision: expected one of: auto or true or false, received "
        "'aut' (string); did you mean 'auto'?"]
