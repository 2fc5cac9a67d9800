"""The config schema: every section, key and default, in one place.

Each section is a dataclass; `metadata["doc"]` is the text README.md's config
reference is checked against, and `metadata["check"]` is a small function that
returns what was expected when a value is out of range (or None when it fits).
`auto` and null defaults are resolved by `dlmine.config.checks.resolve`, so the
`config.yaml` saved in a run directory holds only concrete values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

BUILTIN_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "digits")
TABLE_FORMATS = ("csv", "parquet")
DATASET_NAMES = (*BUILTIN_DATASETS, "npz", *TABLE_FORMATS, "text", "images", "interactions")
RECOMMENDERS = ("mf", "gmf", "ncf", "neumf", "two_tower", "autorec", "dae")
RANKING_LOSSES = ("pointwise", "pairwise", "pairwise_hinge", "listwise")
SIDE_KINDS = ("numeric", "categorical", "embedding", "multi")  # of side-table columns
COLUMN_KINDS = ("numeric", "categorical", "embedding", "ignore")  # of table columns
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _positive(value: Any) -> str | None:
    return None if value >= 1 else "expected an integer >= 1"


def _seed(value: Any) -> str | None:
    return None if 0 <= value < 2**32 else "expected an integer from 0 to 2**32 - 1 (4294967295)"


def _fraction(value: Any) -> str | None:
    return None if 0 < value < 1 else "expected a fraction in (0, 1)"


def _fraction_or_null(value: Any) -> str | None:
    if value is None or 0 < value < 1:
        return None
    return "expected a fraction in (0, 1), or null for no validation split"


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else "expected a number >= 0"


def _codec(value: Any) -> str | None:
    import codecs

    try:
        codecs.lookup(value)
    except LookupError:
        return "expected a Python codec name such as utf-8, latin-1 or cp1252"
    return None


def _safe_name(value: Any) -> str | None:
    if value is None or NAME_PATTERN.match(value):
        return None
    return ("expected a plain name of letters, digits, '.', '_' and '-' (no '/', no leading "
            "dot, at most 100 characters), because it names the run directory")


def doc(text: str, default: Any = None, *, check=None, factory=None):
    """A schema field with its documentation and an optional range check."""
    metadata = {"doc": text, "check": check}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _positive_list(value: Any) -> str | None:
    return None if value and all(v >= 1 for v in value) else "expected a list of integers >= 1"


@dataclass
class InteractionsConfig:
    user: str = doc("The column of user ids (integers or strings, not both).", "user")
    item: str = doc("The column of item ids (integers or strings, not both).", "item")
    rating: str | None = doc(
        "The column of ratings (numbers); required for `task: rating`; for `ranking`, with "
        "`threshold`, decides which interactions are positives. null: none.")
    timestamp: str | None = doc(
        "The column of event times (numbers, or dates that pandas parses); required by the "
        "`leave_last_out` and `time` splits. null: none.")
    threshold: float | None = doc(
        "Ranking: an interaction is a positive when its rating is >= this; null: every "
        "interaction is a positive.")
    ids: Literal["auto", "string"] = doc(
        "How the user and item columns are read (and the tables' key columns): `auto`: "
        "integers when the column holds numbers (a CSV's `007` is 7), else strings, and a "
        "column that mixes numbers and other ids is an error; `string`: every id is the text "
        "as written (`007` and `7` differ; ISBN-like ids among others).", "auto")
    duplicates: Literal["last", "mean", "error"] = doc(
        "A (user, item) pair seen more than once: keep the `last` (by timestamp, then file "
        "order), the `mean` rating (with the last timestamp), or report an `error`.", "last")
    split: Literal["random", "leave_last_out", "time"] = doc(
        "`random`: interactions held out at random (seeded), `test_split` then "
        "`validation_split`; `leave_last_out`: per user, by timestamp, the last interaction is "
        "the test and the one before it validation (users with fewer interactions keep theirs "
        "in training); `time`: interactions at or after `cutoff` are the test, the latest "
        "`validation_split` of the others validation.", "random")
    cutoff: float | str | None = doc(
        "The `time` split's cutoff: a timestamp (a number, or a date when the column holds "
        "dates).")
    negatives: int = doc(
        "Ranking: items the user never interacted with, sampled per positive in every "
        "training epoch from (seed, epoch).", 4, check=_positive)
    eval_negatives: int = doc(
        "Ranking: each held-out positive is ranked against this many sampled items the user "
        "never interacted with (99: the NCF paper's protocol), besides the full ranking "
        "against every item not seen in training.", 99, check=_positive)
    items: str | None = doc(
        "A CSV or Parquet table of the items, one row per item, keyed by a column named like "
        "`item`; `recommend` and `similar` show its other columns (a title) beside each item, "
        "and `item_features` are read from it. Relative to the config file's folder; null: "
        "none.")
    users: str | None = doc(
        "A CSV or Parquet table of the users, one row per user, keyed by a column named like "
        "`user`; `user_features` are read from it. Relative to the config file's folder; "
        "null: none.")
    item_features: dict | None = doc(
        "Columns of the `items` table the model reads, `{column: kind}`: `numeric` "
        "(standardised; missing: the mean), `categorical` (one-hot), `embedding` (a learned "
        "vector of `embedding_dim`) or `multi` (several categories in one cell, split at "
        "`separator`, e.g. `Action|Comedy`: multi-hot). Read by `ncf`, `neumf` and "
        "`two_tower`; null: none.")
    user_features: dict | None = doc(
        "Columns of the `users` table the model reads, as `item_features`.")
    separator: str = doc("What separates the categories of a `multi` cell.", "|")
    embedding_dim: int = doc(
        "Size of the vector of each `embedding` side column.", 8, check=_positive)
    top_k: list[int] = doc(
        "Ranking: the K of HR@K, NDCG@K, Recall@K and coverage@K.",
        factory=lambda: [10], check=_positive_list)


@dataclass
class DatasetConfig:
    name: Literal[DATASET_NAMES] = doc(
        "Which data: `mnist`, `fashion_mnist`, `cifar10`, `cifar100` (Keras' loaders, found first "
        "in `$DLMINE_DATA_DIR`), `digits` (scikit-learn's bundled 8x8 digits, no download), "
        "`npz` (arrays in a local file), `csv` or `parquet` (a table), `text` (a CSV with a text "
        "column, or a folder with one sub-folder of `.txt` files per class), `images` (a folder "
        "with one sub-folder of images per class), `interactions` (a CSV or Parquet file of "
        "user-item events, for a recommender: `dataset.interactions`).", "digits")
    path: str | None = doc(
        "The file or folder of `npz`, `csv`, `parquet`, `text` and `images`; relative to the "
        "config file's folder. An `.npz` holds `x_train`, `y_train` and optionally `x_test`, "
        "`y_test` and `class_names`; for `npz`, a folder of such files is read as shards, one "
        "at a time (data larger than memory).")
    test_path: str | None = doc(
        "Tables, text and image folders: a separate test file or folder (same layout as "
        "`path`); null: the test split is held out of `path` (`test_split`). `npz` refuses it: "
        "an `.npz` file (or each shard) holds its own `x_test` and `y_test`; `interactions` "
        "too: `interactions.split` holds the test out.")
    target: str | None = doc(
        "Tables and text CSVs: the column to predict. Required for `csv` and `parquet`; "
        "`label` for a text CSV when null.")
    columns: dict | None = doc(
        "Tables: the feature columns and their kind, "
        "`{column: numeric|categorical|embedding|ignore}`; null: every column but the target, "
        "numeric when the column holds numbers, else categorical. Numeric columns are "
        "standardized; categorical ones are encoded as `categorical_encoding` says, `embedding` "
        "ones always as a learned embedding; both keep a slot for values unseen in training. "
        "Fitted on the training split.")
    missing: Literal["error", "impute", "drop"] = doc(
        "Tables: rows with missing values are an `error` (named by row and column), `impute`d "
        "(numeric: the training mean; categorical: a category of their own), or `drop`ped.",
        "error")
    categorical_encoding: Literal["onehot", "embedding"] = doc(
        "Tables: how `categorical` columns (named or inferred) enter the model: `onehot` "
        "vectors, or integer codes that a learned `Embedding` per column, put first in the "
        "model and saved with it, turns into `embedding_dim` numbers.", "onehot")
    embedding_dim: int | None = doc(
        "Tables: numbers per embedded category; null: min(50, round(1.6 * codes ** 0.56)) for "
        "each column, codes being its categories seen in training + 1 for unseen values "
        "(fast.ai's rule).", check=lambda v: None if v is None else _positive(v))
    text_column: str = doc("Text CSVs: the column holding the text.", "text")
    encoding: str = doc(
        "Text: the encoding of text CSVs and `.txt` files (a Python codec name, e.g. `latin-1`); "
        "bytes that do not decode are an error naming the file and the byte offset.", "utf-8",
        check=_codec)
    image_size: list[int] | None = doc(
        "Images: every image is resized to `[height, width]`. Required for `images`.")
    color_mode: Literal["rgb", "grayscale"] = doc(
        "Images: 3 channels (`rgb`) or 1 (`grayscale`).", "rgb")
    limit: int | None = doc(
        "Use only the first N training samples (before the validation split; `interactions`: "
        "the first N training interactions in file order, after the split); null for all.",
        check=lambda v: None if v is None else _positive(v))
    validation_split: float | None = doc(
        "Fraction of the training samples held out for validation (stratified for "
        "classification, seeded by `seed`); null for none.", 0.1, check=_fraction_or_null)
    test_split: float = doc(
        "Fraction held out as the test split when the data has no test set of its own "
        "(`digits`, an `.npz` without `x_test`).", 0.2, check=_fraction)
    task: Literal["classification", "regression", "multi_label", "rating", "ranking"] = doc(
        "`classification` (integer class labels), `regression` (numeric targets) or "
        "`multi_label` (text only: several labels per text, `a|b`, split on "
        "`label_separator`; one sigmoid output per label, binary cross-entropy); for "
        "`interactions`, `rating` (predict the rating) or `ranking` (implicit feedback: rank "
        "the items a user will interact with).", "classification")
    label_separator: str = doc("`multi_label`: what separates the labels of one text.", "|")
    threshold: float = doc(
        "`multi_label`: a label is predicted (by `evaluate` and `predict`) when its sigmoid "
        "output is at least this.", 0.5, check=_fraction)
    class_names: list[str] | None = doc(
        "Names of the classes, in label order, for reports; null uses the dataset's own names "
        "or the label numbers.")
    interactions: InteractionsConfig = doc(
        "Interactions (`name: interactions`): the columns of the event file, the split, "
        "negative sampling and the ranking protocol.", factory=lambda: InteractionsConfig())


@dataclass
class TextConfig:
    output_mode: Literal["int", "multi_hot", "count", "tf_idf"] = doc(
        "What a text becomes: `int`, a sequence of `sequence_length` token ids (0 is padding, "
        "1 a term never seen in training) for `Embedding` and recurrent or convolutional "
        "layers; or a bag of `max_tokens` floats for `Dense` layers: `multi_hot` "
        "(1 when the term occurs), `count` (how often), `tf_idf` (count x inverse document "
        "frequency, each text scaled to unit length; terms outside the vocabulary count for "
        "nothing).", "int")
    max_tokens: int = doc(
        "Vocabulary size, the padding and unknown ids included: the `max_tokens - 2` most "
        "frequent terms (words and n-grams) of the training split. An `Embedding` needs "
        "`input_dim: max_tokens`.", 10000,
        check=lambda v: None if v >= 3 else "expected an integer >= 3: the padding id, the "
                                             "unseen-term id and at least one term")
    sequence_length: int = doc(
        "`int` mode: ids per text; longer texts are cut at the end, shorter ones padded with 0 "
        "at the end (`Embedding: {mask_zero: true}` masks the padding).", 100, check=_positive)
    ngrams: int | None = doc(
        "Also count n-grams up to this many words (2: pairs of adjacent words); null for "
        "single words.", check=lambda v: None if v is None else _positive(v))
    sublinear_tf: bool = doc(
        "`tf_idf` only: 1 + ln(count) in place of a term's count (scikit-learn's "
        "`sublinear_tf`), so that a word repeated in one text weighs less than its count.",
        False)
    lowercase: bool = doc("Lowercase the text before splitting it into words.", True)
    strip_punctuation: bool | Literal["split"] = doc(
        "`true`: remove ASCII punctuation (`don't` becomes `dont`) before splitting into words; "
        "`split`: remove apostrophes (`'` and `’`) and make every other mark, ASCII or "
        "Unicode (`“ ” … —`), a word of its own (`great!!` becomes `great ! !`, so `!` and `?` "
        "are counted and paired like words); `false`: keep it where it is.", True)
    strip_html: bool = doc("Replace HTML tags such as `<br />` by a space.", True)


@dataclass
class PreprocessingConfig:
    rescale: float | None = doc(
        "Multiply the inputs by this factor, e.g. `1/255` (a fraction is accepted); null for none.")
    standardize: Literal["global", "feature"] | None = doc(
        "Subtract the mean and divide by the standard deviation, fitted on the training split "
        "only: `global` (one mean and std) or `feature` (one per input value); null for none.")
    reshape: list[int] | None = doc(
        "Reshape each sample to this shape (one entry may be -1), e.g. `[784]`; null keeps it.")
    add_channel_axis: bool = doc(
        "Append a channel axis of size 1, e.g. 28x28 images become 28x28x1 for `Conv2D`.", False)
    labels: Literal["integer", "onehot"] = doc(
        "Class labels as integers (for `sparse_categorical_crossentropy`) or one-hot vectors "
        "(for `categorical_crossentropy`). Ignored for regression.", "integer")
    text: TextConfig = doc(
        "Text: how texts become model inputs; the vocabulary is fitted on the training split "
        "and saved in `preprocessing.json`.", factory=lambda: TextConfig())
    augmentation: list[Any] = doc(
        "Layers put before `model.layers`, written like them, e.g. `- RandomFlip: {mode: "
        "horizontal}`; Keras' `Random*` layers act in training only.", factory=list)


@dataclass
class RecommenderConfig:
    type: Literal[RECOMMENDERS] = doc(
        "`mf` (user and item embeddings, their dot product, user and item biases and the "
        "global mean), `gmf` (a learned weighting of the embeddings' product), `ncf` (`mlp` "
        "over the concatenated embeddings and side features), `neumf` (GMF and NCF fused) or "
        "`two_tower` (`user_tower` and `item_tower` of layers over each side's embedding and "
        "features, scored by their dot product) or `autorec` (rating: I-AutoRec, the `encoder` "
        "layers over each item's training ratings, one value per user, decoded by the dot "
        "product with a learned vector of the user, a user bias and the global mean) or `dae` "
        "(ranking: a denoising autoencoder of the user's history, the `encoder` layers over "
        "the items the user interacted with in training, scored by the dot product with a "
        "learned vector of the item plus the item's bias).", "mf")
    factors: int = doc("Size of the user and item embeddings (of GMF's in `neumf`; of each "
                       "tower's input in `two_tower`; `autorec` and `dae` take their width "
                       "from the encoder's last layer and refuse a size other than 32).", 32,
                       check=_positive)
    mlp_factors: int | None = doc(
        "Size of the embeddings of the MLP part of `ncf` and `neumf`; null: `factors`.",
        check=lambda v: None if v is None else _positive(v))
    mlp: list[Any] = doc(
        "`ncf` and `neumf`: the layers over the concatenated embeddings, written like "
        "`model.layers`, e.g. `- Dense: {units: 64, activation: relu}`.", factory=list)
    user_tower: list[Any] = doc(
        "`two_tower`: the layers over the user's embedding (and its `user_features`), written "
        "like `model.layers`; the last layer's width must equal `item_tower`'s.", factory=list)
    item_tower: list[Any] = doc(
        "`two_tower`: the layers over the item's embedding (and its `item_features`).",
        factory=list)
    encoder: list[Any] = doc(
        "`autorec`: the layers over an item's vector of training ratings (one value per user, "
        "0 where the user did not rate it), written like `model.layers`, e.g. `- Dense: "
        "{units: 500, activation: sigmoid}`; the last layer's width is that of the users' "
        "decoding vectors. `dae`: the layers over a user's training history (1 for each "
        "item the user interacted with, the scored item left out, divided by the square root "
        "of their number), e.g. `- Dropout: {rate: 0.5}` then `- Dense: {units: 64, "
        "activation: tanh}`; the last layer's width is that of the items' vectors.",
        factory=list)
    recency: float | None = doc(
        "`dae`: the half-life of a user's history, in interactions: each item the user "
        "interacted with in training weighs 0.5 ** (k / recency) in the history, k being how "
        "many of the user's training interactions are newer (by `timestamp`, else file order; "
        "the newest weighs 1), so that the latest tastes count most when the next item is "
        "asked for (leave-last-out); null: every item weighs 1.",
        check=lambda v: None if v is None or v > 0 else "expected a number > 0, or null")
    loss: Literal[RANKING_LOSSES] = doc(
        "Ranking: `pointwise` (binary cross-entropy of each positive and sampled negative, "
        "sigmoid output), or, over each positive with its `negatives` as one list (raw-score "
        "output), keras-rs' `pairwise` (PairwiseLogisticLoss, BPR-like), `pairwise_hinge` "
        "(PairwiseHingeLoss) or `listwise` (ListMLELoss).", "pointwise")
    l2: float = doc(
        "L2 penalty of the embeddings (and biases) looked up for each interaction, averaged "
        "over the batch (as `reg` of SGD matrix factorisation, e.g. Surprise's 0.02). "
        "`autorec`: the AutoRec paper's lambda, squared error summed over the training "
        "ratings plus lambda / 2 times the squared weights of the `encoder` kernels and the "
        "users' vectors (per batch: lambda / (2 x training ratings)).", 0.0,
        check=_non_negative)


@dataclass
class ModelConfig:
    recommender: RecommenderConfig | None = doc(
        "A recommender for `interactions` data, instead of `layers`; null for none.")
    layers: list[Any] = doc(
        "The layers, in order: each item is `LayerName: {argument: value, ...}` (or just "
        "`LayerName`) for any public `keras.layers` class except `Lambda` and other layers that "
        "carry code. `Bidirectional` and `TimeDistributed` take a nested layer as `layer:`. The "
        "input shape comes from the data.", factory=list)


@dataclass
class EarlyStoppingConfig:
    monitor: str | None = doc("Metric to watch; null: `val_loss` (or `loss` without validation).")
    patience: int = doc("Epochs without improvement before stopping.", 5, check=_non_negative)
    min_delta: float = doc("Smallest change that counts as an improvement.", 0.0, check=_non_negative)
    mode: Literal["auto", "min", "max"] = doc("Whether the metric should go down or up.", "auto")
    restore_best_weights: bool = doc("Restore the best epoch's weights when stopping.", False)


@dataclass
class ReduceLROnPlateauConfig:
    monitor: str | None = doc("Metric to watch; null: `val_loss` (or `loss` without validation).")
    factor: float = doc("Multiply the learning rate by this on a plateau.", 0.5, check=_fraction)
    patience: int = doc("Epochs without improvement before reducing.", 2, check=_non_negative)
    min_lr: float = doc("Lower bound of the learning rate.", 0.0, check=_non_negative)


@dataclass
class CheckpointConfig:
    monitor: str | None = doc(
        "Metric that decides `checkpoints/best.keras`; null: `val_loss` (or `loss` without "
        "validation).")
    mode: Literal["auto", "min", "max"] = doc(
        "`min` or `max`; `auto` is `max` for accuracy-like metrics and AUC, else `min`.", "auto")


@dataclass
class MlflowConfig:
    tracking_uri: str | None = doc(
        "Where MLflow keeps the runs: a tracking server (`http://127.0.0.1:5000`) or a "
        "database (`sqlite:///mlflow.db`); `--mlflow URI` (or `MLFLOW_TRACKING_URI`) overrides "
        "it. null: MLflow's own default.")
    experiment: str | None = doc(
        "The MLflow experiment the runs go to (created when missing); null: the config's "
        "`name`.")


@dataclass
class TrackingConfig:
    mlflow: MlflowConfig | None = doc(
        "Log each run to MLflow (needs `pip install 'dlmine[mlflow]'`): params, every epoch's "
        "metrics, the test metrics, artifacts and tags; `{}` for the defaults below, null for "
        "off (unless `--mlflow URI` or `MLFLOW_TRACKING_URI` is given).")


@dataclass
class TrainingConfig:
    epochs: int = doc("Number of passes over the training split.", 10, check=_positive)
    batch_size: int = doc("Samples per gradient step.", 32, check=_positive)
    optimizer: str | dict = doc(
        "An optimizer name (`adam`, `sgd`, `rmsprop`, ... any `keras.optimizers` class) or a "
        "mapping `{name: adam, learning_rate: 0.001, ...}` whose other keys are that class's "
        "arguments.", factory=lambda: {"name": "adam", "learning_rate": 0.001})
    loss: str = doc(
        "A `keras.losses` name; `auto`: `sparse_categorical_crossentropy` for integer labels, "
        "`categorical_crossentropy` for one-hot labels, `binary_crossentropy` for one sigmoid "
        "output, `mean_squared_error` for regression.", "auto")
    metrics: list[str] | None = doc(
        "`keras.metrics` names as Keras logs them (snake_case: `auc`, `precision`, `recall`, "
        "`f1_score`, `root_mean_squared_error`, ...); each is computed once on the model's "
        "output when it is built (by `check` too), so one that does not fit the labels is named (`auc`, "
        "`precision` and `recall` compare one output with 0/1 labels: a sigmoid output, not a "
        "softmax over class indices); null: `[accuracy]` for classification, "
        "`[mean_absolute_error]` for regression.")
    early_stopping: EarlyStoppingConfig | None = doc(
        "Stop when the monitored metric stops improving (`keras.callbacks.EarlyStopping`); "
        "`{}` for the defaults below, null for off.")
    reduce_lr_on_plateau: ReduceLROnPlateauConfig | None = doc(
        "Lower the learning rate on a plateau (`keras.callbacks.ReduceLROnPlateau`); `{}` for "
        "the defaults below, null for off.")
    class_weight: None | Literal["balanced"] | dict = doc(
        "Weight of each class in the loss: `balanced` (inverse class frequency, from the "
        "training split) or a mapping `{label: weight}`; null for equal weights.")
    checkpoint: CheckpointConfig = doc(
        "Which epoch is kept as `checkpoints/best.keras`.", factory=CheckpointConfig)
    shuffle: bool = doc("Shuffle the training split every epoch (seeded).", True)
    deterministic: bool = doc(
        "Make training bit-for-bit repeatable on the same machine (TensorFlow op determinism; "
        "slower).", False)
    jit_compile: Literal["auto"] | bool = doc(
        "XLA compilation of the training step, as Keras' `jit_compile`.", "auto")
    mixed_precision: Literal["auto"] | bool = doc(
        "Compute in 16-bit floats, keep the weights in 32 (Keras' mixed precision policy): "
        "`true` is `mixed_float16` on a GPU, `mixed_bfloat16` on a CPU; `false` is float32; "
        "`auto` is `mixed_bfloat16` on GPUs with bfloat16 tensor cores (compute capability 8 "
        "and up), `mixed_float16` on GPUs of compute capability 7, float32 elsewhere, CPUs "
        "with AMX included (measured there: no faster on TensorFlow, several times slower "
        "on JAX). `run.json` records the policy used (`precision`).",
        "auto")
    tensorboard: bool = doc(
        "Write TensorBoard logs to `RUN_DIR/tensorboard/` (`keras.callbacks.TensorBoard`).", False)
    steps_per_execution: int = doc(
        "Training steps run per call into the backend, as Keras' `steps_per_execution`.", 1,
        check=_positive)
    distribution: Literal["none", "mirrored"] = doc(
        "`none`: one device. `mirrored`: every GPU of this machine trains a copy of the model "
        "on its share of each batch (TensorFlow's `MirroredStrategy`; `batch_size` is the "
        "batch of all of them together); without a GPU, every CPU device "
        "(`DLMINE_CPU_DEVICES`). TensorFlow backend only.", "none")
    tracking: TrackingConfig = doc(
        "Experiment tracking besides the run directory.", factory=TrackingConfig)


@dataclass
class TuneConfig:
    metric: str = doc(
        "What `dlmine tune` optimises: a metric of `history.csv` (its best epoch), e.g. "
        "`val_accuracy` or `val_loss`.", "val_loss")
    direction: Literal["auto", "minimize", "maximize"] = doc(
        "`auto`: maximize accuracy-like metrics and AUC, minimize the others.", "auto")
    trials: int = doc("Number of trials (`--trials` overrides).", 20, check=_positive)
    timeout: int | None = doc("Stop starting trials after this many seconds; null for none.",
                              check=lambda v: None if v is None else _positive(v))
    pruner: Literal["median", "none"] = doc(
        "Stop hopeless trials after an epoch (Optuna's median pruner) or never.", "median")
    space: dict = doc(
        "The search space: `{dotted.key: {choice: [...]} | {int: [low, high]} | "
        "{uniform: [low, high]} | {loguniform: [low, high]}}`, over any key of the config, "
        "layer arguments included (`model.layers[0].Conv2D.filters`).", factory=dict)


@dataclass
class Config:
    name: str | None = doc(
        "Name of the experiment; names the run directory. null: the config file's name.",
        check=_safe_name)
    seed: int = doc("Seed for Python, numpy and Keras, and for the data splits.", 42,
                    check=_seed)
    dataset: DatasetConfig = doc("Where the data comes from.", factory=DatasetConfig)
    preprocessing: PreprocessingConfig = doc(
        "Transforms fitted on the training split and saved in the run directory.",
        factory=PreprocessingConfig)
    model: ModelConfig = doc("The network.", factory=ModelConfig)
    training: TrainingConfig = doc("How to fit.", factory=TrainingConfig)
    tune: TuneConfig | None = doc(
        "Hyperparameter search for `dlmine tune`; ignored by `train`. null for none.")


REQUIRED = {("dataset",), ("dataset", "name"), ("model",)}  # model.layers: check_layers_listed
