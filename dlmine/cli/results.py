"""Commands on finished runs: `evaluate`, `predict`, `report`, `runs`, `compare`, `export`.

Each command parses its options and hands over to one library function; results go to
stdout (a path, a table, CSV or JSON), everything for people to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from dlmine.backend.runtime import import_keras
from dlmine.cli.options import CHECKPOINT, RUN_DIR, debug
from dlmine.console import Reporter, print_table
from dlmine.results.evaluate import NotSaved, evaluate_run
from dlmine.results.explain import explain_run
from dlmine.results.export import export_run
from dlmine.results.predict import check_output, output_format, predict_file, render, write_output
from dlmine.results.report import build_report
from dlmine.results.runs import RUNS_HEADER, compare_runs, difference, list_runs, table_rows, value_text
from dlmine.rundir import RunDir
from dlmine.train import tracking


@click.command()
@click.argument("run_dir", type=RUN_DIR)
@CHECKPOINT
@click.option("--split", type=click.Choice(["test", "validation"]), default="test",
              show_default=True, help="Which split to evaluate on.")
@click.option("--json", "as_json", is_flag=True, help="Print eval.json instead of a table.")
@click.option("--quiet", is_flag=True, help="Print nothing; eval.json is still written.")
def evaluate(run_dir, checkpoint, split, as_json, quiet) -> None:
    """Evaluate a finished run from RUN_DIR alone; writes RUN_DIR/eval.json."""
    import_keras(debug())
    reporter = Reporter(quiet=quiet)
    try:
        report = evaluate_run(run_dir, checkpoint, split, reporter)
    except NotSaved as exc:  # the metrics first, then why they are not in eval.json
        show_evaluation(exc.report, run_dir, checkpoint, as_json, reporter)
        raise
    show_evaluation(report, run_dir, checkpoint, as_json, reporter)


def show_evaluation(report: dict, run_dir: Path, checkpoint: str, as_json: bool,
                    reporter: Reporter) -> None:
    """eval.json (`--json`) or the table of metrics, titled with the checkpoint really used."""
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif not reporter.quiet:
        used = report["checkpoint"]
        fallback = f"; {checkpoint} could not be loaded" if used != checkpoint else ""
        reporter.metrics_table(f"{report['split']} metrics ({Path(run_dir).name}, {used} "
                               f"checkpoint{fallback})", report["metrics"], stream="stdout")


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

    fmt = output_format(output)
    check_output(output, run_dir, input_path)
    import_keras(debug())
    rows = predict_file(run_dir, input_path, checkpoint, warn=Reporter().warn)
    text = render(rows, fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    write_output(output, text, run_dir)
    click.echo(f"wrote {len(rows)} prediction{'s' if len(rows) != 1 else ''} to {output}",
               err=True)


@click.command()
@click.argument("run_dir", type=RUN_DIR)
def report(run_dir) -> None:
    """Write RUN_DIR/report/: PNG plots and report.html, one self-contained page; print its path.

    A run tracked in MLflow gets the folder as its `report/` artifact."""

    reporter = Reporter()
    page = build_report(run_dir, reporter)
    tracking.log_report(RunDir(run_dir), reporter.warn)
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

    rows = list_runs(root, status, sort)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        which = f" with status {status}" if status else ""
        click.echo(f"no runs{which} under {root}", err=True)
    else:
        print_table(RUNS_HEADER, table_rows(rows), right={5, 6, 7})


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=RUN_DIR, metavar="RUN_A RUN_B [RUN ...]")
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
def compare(run_dirs, as_json) -> None:
    """Compare RUN_A RUN_B [...]: the config keys that differ and the metrics side by side."""

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
            print_table(["key", *names, *delta], rows, title=title)
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

    import_keras(debug())
    done = export_run(run_dir, fmt, output, checkpoint, Reporter(), quiet_backend=not debug())
    click.echo(f"checked: predictions of the {fmt} export on {done.samples} {done.inputs} match the "
               f"{checkpoint} checkpoint (max abs difference {done.max_abs_diff:.3g})", err=True)
    click.echo(str(done.path))


@click.command()
@click.argument("run_dir", type=RUN_DIR)
@click.option("--split", type=click.Choice(["test", "validation", "train"]), default="test",
              show_default=True, help="The split whose samples are explained.")
@click.option("--samples", type=click.IntRange(min=1), default=8, show_default=True,
              help="How many samples get integrated-gradients attributions.")
@click.option("--steps", type=click.IntRange(min=2), default=64, show_default=True,
              help="Points of the integrated-gradients path (more: a smaller completeness "
                   "gap).")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Shuffles per column of the permutation importance.")
@CHECKPOINT
@click.option("--json", "as_json", is_flag=True, help="Print explain.json instead of a table.")
def explain(run_dir, split, samples, steps, repeats, checkpoint, as_json) -> None:
    """Explain what a run learned: global importance and per-sample attributions, written to
    RUN_DIR/explain/."""
    import_keras(debug())
    reporter = Reporter()
    report = explain_run(run_dir, split, samples, checkpoint, steps, repeats, reporter)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    if report["kind"] == "interactions":
        print_table(["user", "top item", "history that weighs most", "nearest items"],
                    [[str(r["user"]), str(r["top_item"]),
                      ", ".join(str(h["item"]) for h in r["history_weights"][:3]),
                      ", ".join(str(n["item"]) for n in r["nearest_items"][:3])]
                     for r in report["users"]], title="explain: recommendations")
        return
    rows = report["importance"]["inputs"][:15]
    print_table(["input", "importance", "std"],
                [[str(r["input"]), value_text(r["mean"]), value_text(r["std"])] for r in rows],
                right={1, 2}, title=f"explain: the {report['metric']} "
                                    f"{value_text(report['metric_value'])} drops by")
    click.echo(f"importance: {report['importance']['method']}", err=True)
    gap = report["completeness"]["max_relative_gap"]
    click.echo(f"integrated gradients on {len(report['attributions']['samples'])} samples, "
               f"largest completeness gap {gap:.2%}; written to "
               f"{Path(run_dir) / 'explain'}", err=True)
