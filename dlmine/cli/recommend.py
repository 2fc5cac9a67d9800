"""`recommend` and `similar`: answers of a recommender run, CSV or JSON Lines like `predict`."""

from __future__ import annotations

from pathlib import Path

import click

from dlmine.backend.runtime import import_keras
from dlmine.cli.options import CHECKPOINT, RUN_DIR, debug
from dlmine.console import Reporter
from dlmine.errors import UsageError
from dlmine.results.predict import check_output, output_format, render, write_output
from dlmine.results.recommend import Recommender
from dlmine.rundir import RunDir

OUTPUT = click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
                      help="Write here: FILE.csv or FILE.jsonl (JSON Lines). Default: CSV on "
                           "stdout.")
K = click.option("--k", "k", type=click.IntRange(min=1), default=10, show_default=True,
                 help="How many items.")


@click.command()
@click.argument("run_dir", type=RUN_DIR)
@click.option("--user", "user", help="One user id.")
@click.option("--users", "users_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file of user ids, one a line (a header line `user` is skipped).")
@K
@click.option("--include-seen", is_flag=True, help="Also recommend items the user has seen.")
@click.option("--cold-start", type=click.Choice(["error", "popular"]), default="error",
              show_default=True, help="An unknown user: an error, or the most popular items "
              "(flagged cold_start in the output).")
@OUTPUT
@CHECKPOINT
def recommend(run_dir, user, users_file, k, include_seen, cold_start, output, checkpoint) -> None:
    """The top K items of a user (--user) or of many (--users FILE) from a recommender run."""
    if (user is None) == (users_file is None):
        raise click.UsageError("give one of --user U or --users FILE")
    fmt = output_format(output)
    users = [user] if user is not None else _read_users(users_file)
    run = _check_run(run_dir, "recommend", output, users_file)
    import_keras(debug())
    rows = Recommender(run, checkpoint).recommend(users, k, include_seen, cold_start)
    _write(rows, fmt, output, run_dir, "recommendations")


@click.command()
@click.argument("run_dir", type=RUN_DIR)
@click.option("--item", "item", required=True, help="The item id.")
@K
@OUTPUT
@CHECKPOINT
def similar(run_dir, item, k, output, checkpoint) -> None:
    """The items nearest to an item (--item) by a recommender run's learned item vectors."""
    fmt = output_format(output)
    run = _check_run(run_dir, "similar", output)
    import_keras(debug())
    rows = Recommender(run, checkpoint).similar(item, k)
    _write(rows, fmt, output, run_dir, "similar items")


def _check_run(run_dir: Path, verb: str, output: Path | None,
               users_file: Path | None = None) -> RunDir:
    """The opened run, once it is neither the parent of `--folds` nor edited after training
    (its `config.yaml` would rebuild another split, so other seen items), and `--output` is
    what `predict` takes; before Keras loads."""
    check_output(output, run_dir, users_file, "the --users file")
    run = RunDir.open(run_dir)
    run.refuse_folds(verb)
    run.check_config(Reporter().warn)
    return run


def _read_users(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    users = [line for line in lines if line]
    if users and users[0] == "user":
        users = users[1:]
    if not users:
        raise UsageError(f"{path}: no user ids (expected one a line)")
    return users


def _write(rows: list[dict], fmt: str, output: Path | None, run_dir: Path, what: str) -> None:
    text = render(rows, fmt) if rows else ""
    if output is None:
        click.echo(text, nl=False)
        return
    write_output(output, text, run_dir)
    noun = what if len(rows) != 1 else what.removesuffix("s")
    click.echo(f"wrote {len(rows)} {noun} to {output}", err=True)
