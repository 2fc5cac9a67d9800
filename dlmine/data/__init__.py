"""Data: named datasets and files -> splits -> preprocessing fitted on train only."""

from dlmine.data.datasets import DataInfo, Splits, describe, load
from dlmine.data.preprocessing import Preprocessor

__all__ = ["DataInfo", "Preprocessor", "Splits", "describe", "load"]
