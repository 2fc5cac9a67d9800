"""Everything that can fail on the user's input, done before a run directory exists.

`build_checked_model` builds the model on the shape the data will give (loading the data
only where its shape is known from the data alone: tables and texts), so that a mistake
never leaves a half-made run behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlmine.config import LoadedConfig
from dlmine.data import DataInfo, Preprocessor, Source, Splits, source_for
from dlmine.errors import ConfigError, DataError
from dlmine.model.build import build_model


@dataclass
class Prepared:
    """Everything a training needs, checked, before its run directory exists."""

    loaded: LoadedConfig
    model: object
    info: DataInfo
    preprocessor: Preprocessor
    source: Source
    splits: Splits | None = None


def build_checked_model(loaded: LoadedConfig, num_classes: int | None = None,
                        splits: Splits | None = None, source: Source | None = None) -> Prepared:
    """Build the model on the shape the data will give, without loading the data.

    Tables and texts are the exception: their input width (a table's encoded columns) or
    vocabulary is known from the data only, so `splits` are loaded (or given) first. Given
    `splits`, give the `source` that loaded them too: it keeps what the load learned (an
    interactions source's rating range and catalogue, which its evaluation needs).

    Raises:
        ConfigError: a layer does not fit, the output does not fit the classes, or
            `preprocessing.reshape` does not fit the samples.
        DataError: the data file named by the config cannot be read.
    """
    cfg, src = loaded.config, loaded.sources
    source = source or source_for(cfg.dataset)
    if splits is None and source.shape_from_data:
        splits = source.load(cfg.seed)
    info = splits.info if splits is not None else source.describe()
    if num_classes is not None:
        info.num_classes = num_classes
    prep = Preprocessor.for_data(cfg.preprocessing, cfg.dataset.task, info)
    try:
        input_shape = prep.output_shape()
    except DataError as exc:
        raise ConfigError([src.problem(("preprocessing", "reshape"), str(exc))]) from None
    train = None if splits is None else (splits.x_train, splits.y_train)
    model = build_model(cfg, src, input_shape, info.num_classes, source, info, train)
    return Prepared(loaded, model, info, prep, source, splits)


def model_summary(model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    return "\n".join(lines)
