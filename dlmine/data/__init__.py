"""Data: named datasets and files -> splits -> preprocessing fitted on train only."""

from dlmine.data.datasets import NEEDS_DATA, DataInfo, Splits, describe, fit_table_info, load
from dlmine.data.preprocessing import Preprocessor

__all__ = ["NEEDS_DATA", "DataInfo", "Preprocessor", "Splits", "describe", "fit_table_info",
           "load"]
