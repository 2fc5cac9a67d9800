"""dlmine.data: describe, load and its splits, .npz errors, offline Keras data, preprocessing."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dlmine.config.schema import DatasetConfig, PreprocessingConfig
from dlmine.data import Preprocessor, npzfile, source_for
from dlmine.data import arrays as array_sources
from dlmine.errors import DataError
from tests.conftest import mnist_dir, write_config


def describe(cfg: DatasetConfig):
    return source_for(cfg).describe()


def load(cfg: DatasetConfig, seed: int):
    return source_for(cfg).load(seed)

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
NO_NETWORK = ("URL fetch failure on https://...: None -- [Errno -3] Temporary failure in name "
              "resolution")


def npz_cfg(path: Path, **fields) -> DatasetConfig:
    return DatasetConfig(name="npz", path=str(path), **fields)


def save_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def simple_arrays(n_train: int = 12, n_test: int = 6, classes: int = 3) -> dict:
    return {
        "x_train": np.arange(n_train * 4, dtype="float32").reshape(n_train, 2, 2),
        "y_train": np.arange(n_train) % classes,
        "x_test": np.arange(n_test * 4, dtype="float32").reshape(n_test, 2, 2) + 1000,
        "y_test": np.arange(n_test) % classes,
    }


def data_error(call) -> str:
    with pytest.raises(DataError) as caught:
        call()
    return str(caught.value)


def download_failure(name: str, folder) -> str:
    where = (f"DLMINE_DATA_DIR={folder} holds no {name}.npz" if folder
             else "DLMINE_DATA_DIR is not set")
    return (f"dataset '{name}' is not on this machine and could not be downloaded ({NO_NETWORK}). "
            f"dlmine looks first for {name}.npz (arrays x_train, y_train, x_test, y_test, as in "
            f"Keras' own mnist.npz) in $DLMINE_DATA_DIR, and {where}. Put the file there, or try "
            "configs/digits_cnn.yaml, which needs no network.")


@pytest.fixture
def no_loading(monkeypatch):
    """Make every way of reading the arrays fail, to prove that describe() reads none."""

    def refuse(*args, **kwargs):
        raise AssertionError("describe() must not load the data")

    for name in ("_load_digits", "_load_keras_dataset", "read_npz"):
        monkeypatch.setattr(array_sources, name, refuse)
    monkeypatch.setattr(npzfile, "read_npz", refuse)


@pytest.fixture
def keras_offline(monkeypatch):
    """Every Keras download fails as it does on a machine without network."""
    import keras

    def fail():
        raise Exception(NO_NETWORK)

    for name in ("mnist", "fashion_mnist", "cifar10", "cifar100"):
        monkeypatch.setattr(getattr(keras.datasets, name), "load_data", fail)
    return keras


# --- describe ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, shape, classes, first_names", [
    ("mnist", (28, 28), 10, ["0", "1", "2"]),
    ("fashion_mnist", (28, 28), 10, ["T-shirt/top", "Trouser", "Pullover"]),
    ("cifar10", (32, 32, 3), 10, ["airplane", "automobile", "bird"]),
    ("cifar100", (32, 32, 3), 100, ["0", "1", "2"]),
    ("digits", (8, 8), 10, ["0", "1", "2"]),
])
def test_describe_builtin_without_loading(no_loading, monkeypatch, tmp_path, name, shape, classes,
                                          first_names):
    monkeypatch.setenv("DLMINE_DATA_DIR", str(tmp_path))  # empty: nothing to find, nothing read
    info = describe(DatasetConfig(name=name))
    assert info.sample_shape == shape
    assert info.num_classes == classes
    assert len(info.class_names) == classes
    assert info.class_names[:3] == first_names


def test_describe_builtin_regression_and_class_names(no_loading):
    info = describe(DatasetConfig(name="digits", task="regression"))
    assert (info.sample_shape, info.num_classes, info.class_names) == ((8, 8), None, [])
    names = [f"c{i}" for i in range(10)]
    assert describe(DatasetConfig(name="digits", class_names=names)).class_names == names


def test_describe_npz_reads_only_the_header_of_x_train(tmp_path):
    # x_train.npy holds only its header (a 100000x7x5 float32 array without its data):
    # describe answers from the header; reading the array itself would fail.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (100000, 7, 5)})
    members = {"y_train": np.array([0, 4, 1, 2]), "y_test": np.array([6, 0]),
               "class_names": np.array(["a", "b", "c", "d", "e", "f", "g"])}
    path = tmp_path / "header_only.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", header.getvalue())
        for key, array in members.items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(f"{key}.npy", buffer.getvalue())
    info = describe(npz_cfg(path))
    assert info.sample_shape == (7, 5)
    assert info.num_classes == 7  # max label over y_train and y_test, plus one
    assert info.class_names == ["a", "b", "c", "d", "e", "f", "g"]


def test_describe_npz_classes_from_labels_without_class_names(tmp_path):
    path = save_npz(tmp_path / "d.npz", x_train=np.zeros((3, 4, 5, 2), "float32"),
                    y_train=np.array([0, 1, 3]))
    info = describe(npz_cfg(path))
    assert (info.sample_shape, info.num_classes, info.class_names) == (
        (4, 5, 2), 4, ["0", "1", "2", "3"])


def test_describe_tiny_npz_fixture(tiny_npz):
    info = describe(npz_cfg(tiny_npz))
    assert (info.sample_shape, info.num_classes, info.class_names) == (
        (6, 6), 3, ["red", "green", "blue"])


# --- load: splits, limit, fingerprint ----------------------------------------------------------

def test_digits_test_split_is_20_percent_without_a_test_set():
    splits = load(DatasetConfig(name="digits", validation_split=None), seed=0)
    assert splits.x_train.shape == (1438, 8, 8)
    assert splits.x_test.shape == (359, 8, 8)
    assert splits.y_train.shape == (1438,) and splits.y_test.shape == (359,)
    assert splits.x_val is None and splits.y_val is None
    assert splits.y_train.dtype == np.int64
    assert splits.info.sample_shape == (8, 8) and splits.info.num_classes == 10


def test_digits_test_split_follows_test_split_fraction():
    splits = load(DatasetConfig(name="digits", validation_split=None, test_split=0.5), seed=0)
    assert len(splits.x_test) == 898 and len(splits.x_train) == 899


def test_limit_takes_the_first_training_samples_of_digits():
    full = load(DatasetConfig(name="digits", validation_split=None), seed=5)
    limited = load(DatasetConfig(name="digits", validation_split=None, limit=100), seed=5)
    np.testing.assert_array_equal(limited.x_train, full.x_train[:100])
    np.testing.assert_array_equal(limited.y_train, full.y_train[:100])
    np.testing.assert_array_equal(limited.x_test, full.x_test)  # the test split is not limited


def test_limit_takes_the_first_training_samples_of_an_npz(tmp_path):
    arrays = simple_arrays(n_train=12)
    path = save_npz(tmp_path / "d.npz", **arrays)
    splits = load(npz_cfg(path, validation_split=None, limit=5), seed=0)
    np.testing.assert_array_equal(splits.x_train, arrays["x_train"][:5])
    np.testing.assert_array_equal(splits.y_train, arrays["y_train"][:5])
    np.testing.assert_array_equal(splits.x_test, arrays["x_test"])


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_validation_split_is_stratified(seed):
    splits = load(DatasetConfig(name="digits", limit=200, validation_split=0.1), seed=seed)
    assert len(splits.x_val) == 20 and len(splits.x_train) == 180
    assert sorted(set(splits.y_val.tolist())) == list(range(10))
    assert np.bincount(splits.y_val, minlength=10).max() <= 3  # close to 2 of each class


def test_validation_split_with_fewer_training_than_classes_left_does_not_crash(tmp_path):
    # 12 samples of 3 classes, 80% held out: 2 remain for training, fewer than the classes,
    # so a stratified split is impossible; dlmine falls back to a plain seeded split, and
    # then names the class left without a training sample.
    path = save_npz(tmp_path / "d.npz", **simple_arrays(n_train=12))
    with pytest.raises(DataError, match=r"d\.npz: class \d \('\d'\) has no sample in the "
                       r"training split \(after the test and validation splits and "
                       r"dataset\.limit\)"):
        load(npz_cfg(path, validation_split=0.8), seed=0)


def test_same_seed_same_splits_other_seed_other_splits():
    cfg = DatasetConfig(name="digits", limit=300, validation_split=0.2)
    first, again, other = load(cfg, seed=7), load(cfg, seed=7), load(cfg, seed=8)
    for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, key), getattr(again, key))
    assert first.fingerprint == again.fingerprint
    assert not np.array_equal(first.x_val, other.x_val)
    assert not np.array_equal(first.x_test, other.x_test)


def test_fingerprint_stable_and_sensitive_to_data_and_limit(tmp_path):
    arrays = simple_arrays()
    path = save_npz(tmp_path / "d.npz", **arrays)
    base = load(npz_cfg(path), seed=0).fingerprint
    assert base.startswith("sha256:") and len(base) == len("sha256:") + 64
    assert load(npz_cfg(path), seed=0).fingerprint == base
    # the validation split is made after the fingerprint: what was read is the same
    assert load(npz_cfg(path, validation_split=0.5), seed=3).fingerprint == base
    assert load(npz_cfg(path, limit=6), seed=0).fingerprint != base
    assert load(npz_cfg(path, limit=7), seed=0).fingerprint != load(
        npz_cfg(path, limit=6), seed=0).fingerprint
    changed = dict(arrays, x_train=arrays["x_train"].copy())
    changed["x_train"][3, 1, 1] += 1
    other = save_npz(tmp_path / "other.npz", **changed)
    assert load(npz_cfg(other), seed=0).fingerprint != base
    relabelled = dict(arrays, y_test=arrays["y_test"][::-1].copy())
    third = save_npz(tmp_path / "third.npz", **relabelled)
    assert load(npz_cfg(third), seed=0).fingerprint != base


def test_digits_fingerprint_changes_with_limit():
    cfg = DatasetConfig(name="digits", validation_split=None)
    base = load(cfg, seed=0).fingerprint
    assert load(cfg, seed=0).fingerprint == base
    limited = DatasetConfig(name="digits", validation_split=None, limit=500)
    assert load(limited, seed=0).fingerprint != base


def test_load_npz_keeps_class_names_and_counts_classes(tiny_npz):
    splits = load(npz_cfg(tiny_npz, validation_split=0.25), seed=1)
    assert splits.info.class_names == ["red", "green", "blue"]
    assert splits.info.num_classes == 3
    assert len(splits.x_train) == 45 and len(splits.x_val) == 15 and len(splits.x_test) == 20


def test_whole_float_labels_become_integers(tmp_path):
    path = save_npz(tmp_path / "d.npz", x_train=np.zeros((4, 2), "float32"),
                    y_train=np.array([0.0, 1.0, 2.0, 1.0]), x_test=np.zeros((2, 2), "float32"),
                    y_test=np.array([[1.0], [0.0]]))
    splits = load(npz_cfg(path, validation_split=None), seed=0)
    assert splits.y_train.dtype == np.int64 and splits.y_train.tolist() == [0, 1, 2, 1]
    assert splits.y_test.tolist() == [1, 0]


# --- .npz errors -------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.npz"
    assert data_error(lambda: load(npz_cfg(path), 0)) == f"data file not found: {path}"
    assert data_error(lambda: describe(npz_cfg(path))) == f"data file not found: {path}"


@pytest.mark.parametrize("keep, missing, found", [
    (("x_test", "y_test"), "x_train, y_train", "x_test, y_test"),
    (("x_train", "x_test", "y_test"), "y_train", "x_train, x_test, y_test"),
    (("y_train",), "x_train", "y_train"),
])
def test_missing_train_arrays(tmp_path, keep, missing, found):
    arrays = simple_arrays()
    path = save_npz(tmp_path / "d.npz", **{k: arrays[k] for k in keep})
    assert data_error(lambda: load(npz_cfg(path), 0)) == (
        f"{path}: missing array(s) {missing}; expected x_train, y_train and optionally x_test, "
        f"y_test; found {found}")


def test_describe_without_x_train(tmp_path):
    path = save_npz(tmp_path / "d.npz", y_train=np.array([0, 1]))
    assert data_error(lambda: describe(npz_cfg(path))) == (
        f"{path}: missing array x_train; expected x_train, y_train and optionally x_test, y_test")


def test_x_test_without_y_test_and_y_test_without_x_test(tmp_path):
    arrays = simple_arrays()
    path = save_npz(tmp_path / "a.npz", x_train=arrays["x_train"], y_train=arrays["y_train"],
                    x_test=arrays["x_test"])
    assert data_error(lambda: load(npz_cfg(path), 0)) == (
        f"{path}: missing array(s) y_test; expected x_train, y_train and optionally x_test, "
        "y_test; found x_train, y_train, x_test")
    path = save_npz(tmp_path / "b.npz", x_train=arrays["x_train"], y_train=arrays["y_train"],
                    y_test=arrays["y_test"])
    assert data_error(lambda: load(npz_cfg(path), 0)) == (
        f"{path}: missing array(s) x_test; expected x_train, y_train and optionally x_test, "
        "y_test; found x_train, y_train, y_test")


def test_length_mismatch(tmp_path):
    arrays = simple_arrays()
    path = save_npz(tmp_path / "a.npz", **dict(arrays, y_train=arrays["y_train"][:-2]))
    assert data_error(lambda: load(npz_cfg(path), 0)) == (
        f"{path}: x_train has 12 samples but y_train has 10; expected one label per sample")
    path = save_npz(tmp_path / "b.npz", **dict(arrays, y_test=np.zeros(9, "int64")))
    assert data_error(lambda: load(npz_cfg(path), 0)) == (
        f"{path}: x_test has 6 samples but y_test has 9; expected one label per sample")


def test_non_numeric_inputs(tmp_path):
    path = save_npz(tmp_path / "a.npz", x_train=np.array([["a", "b"], ["c", "d"]]),
                    y_train=np.array([0, 1]))
    assert data_error(lambda: load(npz_cfg(path), 0)) == (
        f"{path}: x_train has dtype <U1; expected numbers")
    arrays = simple_arrays()
    path = save_npz(tmp_path / "b.npz", **dict(arrays, x_test=np.array(["x"] * 6)))
    assert data_error(lambda: load(npz_cfg(path), 0)) == (
        f"{path}: x_test has dtype <U1; expected numbers")


def _object_npz(folder: Path, key: str) -> tuple[Path, str]:
    arrays = {"x_train": np.zeros((2, 3), "float32"), "y_train": np.array([0, 1])}
    arrays[key] = np.array([[1, 2], [3]] if key == "x_train" else [0, 1], dtype=object)
    path = save_npz(folder / "objects.npz", **arrays)
    return path, (f"{path}: holds Python objects (pickled arrays), which dlmine does not load; "
                  "save plain numeric arrays")


@pytest.mark.parametrize("key", ["x_train", "y_train"])
def test_object_arrays_are_refused_by_load(tmp_path, key):
    path, refused = _object_npz(tmp_path, key)
    assert data_error(lambda: load(npz_cfg(path), 0)) == (
        f"{refused} (Object arrays cannot be loaded when allow_pickle=False)")


@pytest.mark.parametrize("key", ["x_train", "y_train"])
def test_object_arrays_are_refused_by_describe(tmp_path, key):
    # `dlmine check` only describes the data: it must refuse the file too, not crash or pass
    path, refused = _object_npz(tmp_path, key)
    assert data_error(lambda: describe(npz_cfg(path))).startswith(refused)


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _npy_file(path: Path) -> None:
    with open(path, "wb") as handle:
        np.save(handle, np.zeros((3, 2)))


def _truncated_member(path: Path) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (50, 4)})
    labels = io.BytesIO()
    np.save(labels, np.zeros(50, "int64"))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", header.getvalue() + b"\0" * 17)
        archive.writestr("y_train.npy", labels.getvalue())


@pytest.mark.parametrize("damage", [_random_bytes, _npy_file, _truncated_member],
                         ids=["random-bytes", "npy-not-npz", "truncated-member"])
def test_corrupt_file_is_not_readable_npz(tmp_path, damage):
    path = tmp_path / "corrupt.npz"
    damage(path)
    message = data_error(lambda: load(npz_cfg(path), 0))
    assert message.startswith(f"{path}: not a readable .npz file ("), message
    assert message.endswith(")")
    assert "pickled" not in message


def test_corrupt_file_describe(tmp_path):
    path = tmp_path / "corrupt.npz"
    _random_bytes(path)
    assert data_error(lambda: describe(npz_cfg(path))) == (
        f"{path}: not a readable .npz file (File is not a zip file)")


def test_float_labels_that_are_not_whole_numbers(tmp_path):
    path = save_npz(tmp_path / "d.npz", x_train=np.zeros((3, 2), "float32"),
                    y_train=np.array([0.0, 1.5, 2.0]))
    assert data_error(lambda: load(npz_cfg(path, validation_split=None), 0)) == (
        f"{path}: y_train holds float64 values that are not whole numbers: expected integer class "
        "labels 0..N-1 (or dataset.task: regression)")
    arrays = simple_arrays()
    path = save_npz(tmp_path / "t.npz", **dict(arrays, y_test=np.full(6, 0.25, "float32")))
    assert data_error(lambda: load(npz_cfg(path), 0)) == (
        f"{path}: y_test holds float32 values that are not whole numbers: expected integer class "
        "labels 0..N-1 (or dataset.task: regression)")


def test_float_labels_are_fine_for_regression(tmp_path):
    path = save_npz(tmp_path / "d.npz", x_train=np.zeros((4, 2), "float32"),
                    y_train=np.array([0.5, -1.5, 2.25, 3.0]))
    splits = load(npz_cfg(path, validation_split=None, task="regression", test_split=0.25), 0)
    assert splits.y_train.dtype == np.float32 and len(splits.y_test) == 1


def test_negative_labels(tmp_path):
    arrays = simple_arrays()
    path = save_npz(tmp_path / "a.npz", **dict(arrays, y_train=arrays["y_train"] - 1))
    assert data_error(lambda: load(npz_cfg(path), 0)) == (
        f"{path}: y_train holds the label -1: expected class labels 0..N-1")
    path = save_npz(tmp_path / "b.npz", **dict(arrays, y_test=arrays["y_test"] - 3))
    assert data_error(lambda: load(npz_cfg(path), 0)) == (
        f"{path}: y_test holds the label -3: expected class labels 0..N-1")


def _empty_npz(folder: Path) -> Path:
    return save_npz(folder / "empty.npz", x_train=np.zeros((0, 6, 6), "float32"),
                    y_train=np.zeros(0, "int64"))


def test_empty_x_train_load(tmp_path):
    path = _empty_npz(tmp_path)
    assert data_error(lambda: load(npz_cfg(path), 0)) == f"{path}: x_train is empty"


def test_empty_x_train_describe(tmp_path):
    path = _empty_npz(tmp_path)
    assert data_error(lambda: describe(npz_cfg(path))) == f"{path}: x_train is empty"


def test_empty_x_test(tmp_path):
    arrays = simple_arrays()
    path = save_npz(tmp_path / "empty.npz", **dict(arrays, x_test=np.zeros((0, 2, 2), "float32"),
                                                   y_test=np.zeros(0, "int64")))
    assert data_error(lambda: load(npz_cfg(path), 0)) == f"{path}: x_test is empty"


# --- Keras datasets offline --------------------------------------------------------------------

def test_keras_dataset_read_from_data_dir(tmp_path, monkeypatch, keras_offline):
    rng = np.random.default_rng(1)
    arrays = {"x_train": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
              "y_train": (np.arange(30) % 10).astype(np.uint8),
              "x_test": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
              "y_test": np.arange(10).astype(np.uint8)}
    save_npz(tmp_path / "fashion_mnist.npz", **arrays)
    monkeypatch.setenv("DLMINE_DATA_DIR", str(tmp_path))
    splits = load(DatasetConfig(name="fashion_mnist", validation_split=None), seed=0)
    np.testing.assert_array_equal(splits.x_train, arrays["x_train"])
    np.testing.assert_array_equal(splits.y_train, arrays["y_train"].astype("int64"))
    np.testing.assert_array_equal(splits.x_test, arrays["x_test"])
    np.testing.assert_array_equal(splits.y_test, arrays["y_test"].astype("int64"))
    assert splits.info.class_names == array_sources.FASHION_NAMES
    assert splits.info.sample_shape == (28, 28) and splits.info.num_classes == 10


def test_keras_dataset_missing_offline_names_data_dir(tmp_path, monkeypatch, keras_offline):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DLMINE_DATA_DIR", str(empty))
    message = data_error(lambda: load(DatasetConfig(name="cifar10"), seed=0))
    assert message == download_failure("cifar10", empty)


def test_keras_dataset_missing_offline_without_data_dir(monkeypatch, keras_offline):
    monkeypatch.delenv("DLMINE_DATA_DIR", raising=False)
    message = data_error(lambda: load(DatasetConfig(name="cifar10"), seed=0))
    assert message == download_failure("cifar10", None)


CIFAR_CONFIG = """\
name: offline
dataset:
  name: cifar10
model:
  layers:
    - Flatten
    - Dense: {units: 10, activation: softmax}
training:
  epochs: 1
"""


def test_cli_train_offline_dataset_is_a_clean_error(cli, tmp_path, monkeypatch, keras_offline):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DLMINE_DATA_DIR", str(empty))
    cfg = write_config(tmp_path, CIFAR_CONFIG)
    runs = tmp_path / "runs"
    result = cli("train", cfg, "--runs-root", runs)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: dataset 'cifar10' is not on this machine")
    assert result.stderr == f"Error: {download_failure('cifar10', empty)}\n"
    assert "Traceback" not in result.output
    assert not runs.exists() or not any(runs.iterdir())  # no half-made run directory


def test_real_mnist_from_data_dir(monkeypatch, keras_offline):
    folder = mnist_dir()
    if folder is None:
        pytest.fail("the real MNIST is missing: DLMINE_DATA_DIR must point at the folder that "
                    "holds mnist.npz (CI always provides it)")
    monkeypatch.setenv("DLMINE_DATA_DIR", str(folder))
    splits = load(DatasetConfig(name="mnist", limit=3000), seed=0)
    assert splits.x_train.shape == (2700, 28, 28) and splits.x_val.shape == (300, 28, 28)
    assert splits.x_test.shape == (10000, 28, 28)
    assert splits.x_train.dtype == np.uint8
    assert np.bincount(splits.y_test, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert splits.info.num_classes == 10


# --- preprocessing -----------------------------------------------------------------------------

def prep_for(x_train: np.ndarray, task: str = "classification", num_classes: int = 3,
             **fields) -> Preprocessor:
    return Preprocessor(PreprocessingConfig(**fields), task, num_classes, x_train.shape[1:])


@pytest.fixture
def images():
    rng = np.random.default_rng(2)
    x_train = rng.integers(0, 256, (40, 6, 6)).astype("uint8")
    x_test = rng.integers(0, 256, (10, 6, 6)).astype("uint8")
    return x_train, x_test


def test_rescale(images):
    x_train, x_test = images
    prep = prep_for(x_train, rescale=1 / 255).fit(x_train)
    out = prep.transform_x(x_test)
    assert out.dtype == np.float32 and out.shape == (10, 6, 6)
    np.testing.assert_allclose(out, x_test.astype("float32") / 255, rtol=1e-6)
    assert prep.mean is None and prep.std is None


def test_no_preprocessing_is_identity(images):
    x_train, x_test = images
    prep = prep_for(x_train).fit(x_train)
    np.testing.assert_array_equal(prep.transform_x(x_test), x_test.astype("float32"))


def test_standardize_global_fitted_on_train_only(images):
    x_train, x_test = images
    x_test = x_test.astype("float32") + 40  # shifted: its own statistics differ
    prep = prep_for(x_train, standardize="global").fit(x_train)
    mean, std = x_train.astype("float64").mean(), x_train.astype("float64").std()
    assert prep.mean.shape == () and prep.std.shape == ()
    np.testing.assert_allclose(prep.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(prep.std, std, rtol=1e-6)
    np.testing.assert_allclose(prep.transform_x(x_train).mean(), 0, atol=1e-5)
    expected = (x_test - np.float32(mean)) / np.float32(std)
    np.testing.assert_allclose(prep.transform_x(x_test), expected, rtol=1e-5, atol=1e-5)
    assert prep.transform_x(x_test).mean() > 0.3  # test stats were not used


def test_standardize_feature_fitted_on_train_only(images):
    x_train, x_test = images
    prep = prep_for(x_train, standardize="feature", rescale=0.5).fit(x_train)
    scaled = x_train.astype("float64") * 0.5
    assert prep.mean.shape == (6, 6) and prep.std.shape == (6, 6)
    np.testing.assert_allclose(prep.mean, scaled.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(prep.std, scaled.std(axis=0), rtol=1e-6)
    expected = (x_test.astype("float32") * 0.5 - prep.mean) / prep.std
    np.testing.assert_allclose(prep.transform_x(x_test), expected, rtol=1e-6)
    out = prep.transform_x(x_train)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=0), 1, rtol=1e-4)


@pytest.mark.parametrize("mode", ["global", "feature"])
def test_constant_features_do_not_divide_by_zero(mode):
    x_train = np.ones((20, 3, 3), "float32") * 7
    x_train[:, 0, 0] = np.arange(20)
    prep = prep_for(x_train, standardize=mode).fit(x_train)
    out = prep.transform_x(np.full((2, 3, 3), 7, "float32"))
    assert np.isfinite(out).all()
    if mode == "feature":
        assert prep.std[1, 1] == 1.0 and prep.std[2, 2] == 1.0
        assert (out[:, 1:, 1:] == 0).all()
    constant = np.full((5, 2), 3, "float32")
    prep = prep_for(constant, standardize=mode).fit(constant)
    np.testing.assert_array_equal(prep.transform_x(constant), np.zeros((5, 2), "float32"))


@pytest.mark.parametrize("reshape, shape", [
    ([-1], (36,)), ([3, -1], (3, 12)), ([-1, 4], (9, 4)), ([36], (36,)), ([2, 3, 6], (2, 3, 6)),
])
def test_reshape(images, reshape, shape):
    x_train, x_test = images
    prep = prep_for(x_train, reshape=reshape).fit(x_train)
    assert prep.output_shape() == shape
    out = prep.transform_x(x_test)
    assert out.shape == (10, *shape)
    np.testing.assert_array_equal(out.reshape(10, -1), x_test.reshape(10, -1).astype("float32"))


def test_reshape_that_does_not_fit(images):
    x_train, _ = images
    message = data_error(lambda: prep_for(x_train, reshape=[5, -1]).output_shape())
    assert message == ("preprocessing.reshape [5, -1] does not fit samples of shape (6, 6) "
                       "(36 values)")
    message = data_error(lambda: prep_for(x_train, reshape=[5, 5]).output_shape())
    assert message == ("preprocessing.reshape [5, 5] holds 25 values, but samples of shape (6, 6) "
                       "hold 36")


def test_add_channel_axis(images):
    x_train, x_test = images
    prep = prep_for(x_train, add_channel_axis=True).fit(x_train)
    assert prep.output_shape() == (6, 6, 1)
    out = prep.transform_x(x_test)
    assert out.shape == (10, 6, 6, 1)
    np.testing.assert_array_equal(out[..., 0], x_test.astype("float32"))
    prep = prep_for(x_train, add_channel_axis=True, reshape=[-1]).fit(x_train)
    assert prep.output_shape() == (36, 1) and prep.transform_x(x_test).shape == (10, 36, 1)


def test_labels(images):
    x_train, _ = images
    y = np.array([0, 2, 1, 2])
    onehot = prep_for(x_train, labels="onehot").transform_y(y)
    assert onehot.dtype == np.float32
    np.testing.assert_array_equal(onehot, [[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(prep_for(x_train).transform_y(y), y)
    regression = prep_for(x_train, task="regression", num_classes=None, labels="onehot")
    out = regression.transform_y(np.array([0.5, 2.0]))
    assert out.dtype == np.float32 and out.tolist() == [0.5, 2.0]


@pytest.mark.parametrize("fields", [
    {},
    {"rescale": 1 / 255, "standardize": "global", "labels": "onehot"},
    {"rescale": 0.5, "standardize": "feature", "reshape": [-1], "add_channel_axis": True},
])
def test_state_files_round_trip(tmp_path, images, fields):
    x_train, x_test = images
    prep = prep_for(x_train, **fields).fit(x_train)
    files = prep.state_files()
    expected_files = {"preprocessing.json"} | ({"preprocessing.npz"} if "standardize" in fields
                                              else set())
    assert set(files) == expected_files
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    loaded = Preprocessor.load(tmp_path)
    assert loaded.cfg == prep.cfg
    assert (loaded.task, loaded.num_classes, loaded.sample_shape) == ("classification", 3, (6, 6))
    assert loaded.output_shape() == prep.output_shape()
    for x in (x_train, x_test):
        np.testing.assert_array_equal(loaded.transform_x(x), prep.transform_x(x))
    y = np.array([2, 0, 1])
    np.testing.assert_array_equal(loaded.transform_y(y), prep.transform_y(y))
    meta = json.loads(files["preprocessing.json"])
    assert meta["output_shape"] == list(prep.output_shape())


def test_transform_x_with_wrong_sample_shape(images):
    x_train, _ = images
    prep = prep_for(x_train).fit(x_train)
    message = data_error(lambda: prep.transform_x(np.zeros((2, 5, 5), "float32")))
    assert message == "inputs have sample shape (5, 5), but this run was trained on (6, 6)"
    message = data_error(lambda: prep.transform_x(np.zeros((2, 36), "float32")))
    assert message == "inputs have sample shape (36,), but this run was trained on (6, 6)"


@pytest.mark.parametrize("text, reason", [
    ("", "Expecting value: line 1 column 1 (char 0)"),
    ('{"config": {"rescale": nul', "Expecting value: line 1 column 24 (char 23)"),
    ("{}", "'config'"),
    ('{"config": {"bogus": 1}, "task": "classification", "num_classes": 3, '
     '"sample_shape": [6, 6]}',
     "PreprocessingConfig.__init__() got an unexpected keyword argument 'bogus'"),
])
def test_damaged_preprocessing_json(tmp_path, text, reason):
    path = tmp_path / "preprocessing.json"
    path.write_text(text)
    assert data_error(lambda: Preprocessor.load(tmp_path)) == (
        f"{path}: damaged preprocessing state ({reason})")


def test_missing_preprocessing_state(tmp_path, images):
    x_train, _ = images
    assert data_error(lambda: Preprocessor.load(tmp_path)) == (
        f"{tmp_path / 'preprocessing.json'}: missing; the run directory's preprocessing state "
        "is needed to apply the same transforms")
    files = prep_for(x_train, standardize="global").fit(x_train).state_files()
    (tmp_path / "preprocessing.json").write_bytes(files["preprocessing.json"])
    assert data_error(lambda: Preprocessor.load(tmp_path)) == (
        f"{tmp_path / 'preprocessing.npz'}: missing; the run directory's preprocessing state "
        "is needed to apply the same transforms")
