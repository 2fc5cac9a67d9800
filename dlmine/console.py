"""Terminal output: rich progress in a terminal, one plain line per epoch otherwise.

Human-facing output goes to stderr, so that stdout carries only the result a
script wants (the run directory of `train`, the metrics table or JSON of
`evaluate`).
"""

from __future__ import annotations

import math
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text


class Reporter:
    """Reports training as it goes.

    Args:
        quiet: print nothing.
        force_plain: one line per epoch even in a terminal.
    """

    def __init__(self, quiet: bool = False, force_plain: bool = False):
        self.quiet = quiet
        self.err = Console(stderr=True, highlight=False)
        self.rich = self.err.is_terminal and not force_plain and not quiet
        self._progress: Progress | None = None
        self._epochs = self._batches = None

    def info(self, message: str) -> None:
        self._say(message)

    def warn(self, message: str) -> None:
        self._say(f"Warning: {message}", style="yellow")

    def _say(self, message: str, style: str | None = None) -> None:
        """A message on stderr: styled in a terminal; as it is in a log, never wrapped (a
        path cut at 80 columns cannot be copied from a CI log)."""
        if self.quiet:
            return
        if self.err.is_terminal:
            self.err.print(message, markup=False, style=style)
        else:
            print(message, file=sys.stderr, flush=True)

    def train_begin(self, epochs: int, steps: int, initial_epoch: int = 0) -> None:
        if not self.rich:
            return
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(),
                                  TextColumn("{task.fields[metrics]}"), console=self.err)
        self._progress.start()
        self._epochs = self._progress.add_task("epochs", total=epochs, completed=initial_epoch,
                                               metrics="")
        self._batches = self._progress.add_task("batches", total=steps, metrics="")

    def epoch_begin(self, epoch: int) -> None:
        if self._progress:
            self._progress.reset(self._batches, metrics="")

    def batch_end(self, batch: int, logs: dict) -> None:
        if self._progress:
            self._progress.update(self._batches, completed=batch + 1, metrics=format_logs(logs))

    def epoch_end(self, line: str) -> None:
        if self._progress:
            self._progress.advance(self._epochs)
            self._progress.console.print(line, markup=False)
        elif not self.quiet:
            print(line, file=sys.stderr, flush=True)

    def train_end(self) -> None:
        if self._progress:
            self._progress.stop()
            self._progress = None

    def metrics_table(self, title: str, metrics: dict, stream: str = "stderr") -> None:
        """A two-column table of metric names and values."""
        if self.quiet and stream == "stderr":
            return
        table = new_table()
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in metrics.items():
            table.add_row(name, number(value))
        console = self.err if stream == "stderr" else Console(highlight=False)
        console.print(title, markup=False)
        console.print(table)


def number(value, digits: int = 4) -> str:
    """A metric as dlmine prints it everywhere: floats with `digits` decimals, or `digits`
    significant digits when that would show a small or large one as 0.0000 (a learning rate
    of 1e-05); true, false and null as YAML spells them; else as is."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != 0 and math.isfinite(value) and (abs(value) < 10 ** -(digits - 1)
                                                    or abs(value) >= 10 ** (digits + 2)):
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}"
    return str(value)


def format_logs(logs: dict) -> str:
    """`accuracy 0.9712 - loss 0.0931`: the numeric entries of Keras' epoch logs."""
    return " - ".join(f"{k} {number(float(v))}" for k, v in logs.items()
                      if isinstance(v, (int, float)))


def new_table(title: str | None = None) -> Table:
    """dlmine's table style: a title on the left, default borders."""
    return Table(title=title, title_justify="left")


def print_table(header: list[str], rows: list[list[str]], right: set = frozenset(),
                title: str | None = None) -> None:
    """A table on stdout, full width even when stdout is a pipe."""
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(highlight=False, width=240)
    table = new_table(title)
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if i in right else "left")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # a class name like [red] is not markup
    console.print(table)
