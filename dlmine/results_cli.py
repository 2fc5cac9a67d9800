"""Commands on finished runs: `predict`, `report`, `runs`, `compare`, `export`.

Each command parses its options and hands over to one library function; results go to
stdout (a path, a table, CSV or JSON), everything for people to stderr. Keras and
matplotlib are imported inside the commands, so `dlmine --help` stays fast. `cli.py`
registers `COMMANDS` on the main group, whose error handling turns a `DlmineError` into
`Error: ...` and its exit code.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

RUN_DIR = click.Path(file_okay=False, path_type=Path)
CHECKPOINT = click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best",
                          show_default=True, help="Which saved checkpoint to use.")


def _debug() -> bool:
    ctx = click.get_current_context()
    return bool(ctx.find_root().params.get("debug"))


def _import_keras() -> None:
    from dlmine.devices import import_keras

    import_keras(_debug())


@click.command()
@click.argument("run_dir", type=RUN_DIR)
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here: FILE.csv or FILE.jsonl (JSON Lines). Default: CSV on stdout.")
@CHECKPOINT
def predict(run_dir, input_path, output, checkpoint) -> None:
    """Predict INPUT with a run's preprocessing and model.

    INPUT is read as the run was trained: an .npz (x, x_test or x_train) or .npy for arrays, a
    CSV or Parquet file for tables, a .txt file, a folder of .txt files or a CSV for text, an
    image file or a folder of images for images.

    Writes the predicted class, its index and one probability per class (the value for
    regression), one row per sample.
    """
    from dlmine.predict import output_format, predict_file, render
    from dlmine.rundir import atomic_write

    fmt = output_format(output)
    _import_keras()
    rows = predict_file(run_dir, input_path, checkpoint)
    text = render(rows, fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    atomic_write(output, text)
    click.echo(f"wrote {len(rows)} predictions to {output}", err=True)


@click.command()
@click.argument("run_dir", type=RUN_DIR)
def report(run_dir) -> None:
    """Write RUN_DIR/report/: PNG plots and report.html, one self-contained page; print its path."""
    from dlmine.console import Reporter
    from dlmine.report import build_report

    page = build_report(run_dir, Reporter())
    click.echo(str(page))


@click.command()
@click.argument("root", required=False, default=Path("runs"), envvar="DLMINE_RUNS_ROOT",
                type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--status", type=click.Choice(["running", "completed", "failed", "interrupted", "damaged"]),
              help="Show only runs with this status.")
@click.option("--sort", type=click.Choice(["started", "name", "duration", "accuracy", "loss"]),
              default="started", show_default=True,
              help="Order: started and name ascending, duration shortest first, accuracy highest "
                   "first, loss lowest first.")
def runs(root, as_json, status, sort) -> None:
    """List every run under ROOT (default: $DLMINE_RUNS_ROOT or runs): status, metrics, duration."""
    from dlmine.runs import RUNS_HEADER, list_runs, table_rows

    rows = list_runs(root, status, sort)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        which = f" with status {status}" if status else ""
        click.echo(f"no runs{which} under {root}", err=True)
    else:
        _print_table(RUNS_HEADER, table_rows(rows), right={5, 6, 7})


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=RUN_DIR, metavar="RUN_A RUN_B [RUN ...]")
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
def compare(run_dirs, as_json) -> None:
    """Compare RUN_A RUN_B [...]: the config keys that differ and the metrics side by side."""
    from dlmine.runs import compare_runs, difference, value_text

    result = compare_runs(list(run_dirs))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    names = [Path(p).name for p in result["runs"]]
    delta = ["B - A"] if len(names) == 2 else []
    for title, table in (("config differences", result["config"]), ("metrics", result["metrics"])):
        rows = [[key, *map(value_text, values), *([difference(values)] if delta else [])]
                for key, values in table.items()]
        if rows:
            _print_table(["key", *names, *delta], rows, title=title)
        else:
            click.echo(f"{title}: none")


@click.command()
@click.argument("run_dir", type=RUN_DIR)
@click.option("--format", "fmt", required=True,
              type=click.Choice(["keras", "savedmodel", "onnx", "tflite"]), help="What to write.")
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="Where to write. Default: RUN_DIR/export/model.keras, savedmodel/, model.onnx "
                   "or model.tflite.")
@CHECKPOINT
def export(run_dir, fmt, output, checkpoint) -> None:
    """Export a run's model, load it back and check it predicts the same; print its path."""
    from dlmine.console import Reporter
    from dlmine.export import export_run

    _import_keras()
    done = export_run(run_dir, fmt, output, checkpoint, Reporter(), quiet_backend=not _debug())
    click.echo(f"checked: predictions of the {fmt} export on {done.samples} {done.inputs} match the "
               f"{checkpoint} checkpoint (max abs difference {done.max_abs_diff:.3g})", err=True)
    click.echo(str(done.path))


def _print_table(header: list[str], rows: list[list[str]], right: set = frozenset(),
                 title: str | None = None) -> None:
    """A rich table on stdout, full width even when stdout is a pipe."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(highlight=False, width=240)
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if i in right else "left")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # a class name like [red] is not markup
    console.print(table)


COMMANDS = [predict, report, runs, compare, export]
