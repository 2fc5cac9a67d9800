"""Data: one source per kind (`Source`), its seeded splits, and preprocessing fitted on train.

`source_for(cfg.dataset)` is the one place that maps a dataset name to its kind; adding a
kind is its own module and one line of `SOURCES`.
"""

from __future__ import annotations

from pathlib import Path

from dlmine.config.schema import DatasetConfig
from dlmine.data.arrays import BuiltinSource, NpzSource
from dlmine.data.base import DataInfo, Source, Splits
from dlmine.data.images import ImageSource
from dlmine.data.interactions import InteractionsSource
from dlmine.data.preprocessing import Preprocessor
from dlmine.data.shards import ShardsSource
from dlmine.data.table import TableSource
from dlmine.data.text import TextSource

SOURCES: dict[str, type[Source]] = {
    "mnist": BuiltinSource, "fashion_mnist": BuiltinSource, "cifar10": BuiltinSource,
    "cifar100": BuiltinSource, "digits": BuiltinSource,
    "npz": NpzSource,  # a folder of .npz files is read as shards
    "csv": TableSource, "parquet": TableSource,
    "text": TextSource,
    "images": ImageSource,
    "interactions": InteractionsSource,
}


def source_for(cfg: DatasetConfig) -> Source:
    """The source of a config's `dataset` section."""
    if cfg.name == "npz" and cfg.path and Path(cfg.path).is_dir():
        return ShardsSource(cfg)
    return SOURCES[cfg.name](cfg)


__all__ = ["SOURCES", "DataInfo", "Preprocessor", "Source", "Splits", "source_for"]
