"""The command line: thin commands that parse options and hand over to library code.

A `DlmineError` becomes `Error: ...` on stderr and its exit code (2 for config
and usage errors, 1 for other failures, 130 when interrupted), with no traceback
unless `--debug` is given. Each command lives in a module of this package that is
imported only when the command runs (click's lazy subcommands), so `dlmine --help`
answers at once and Keras is imported only by the commands that need it.
"""

from __future__ import annotations

import importlib
import re
import textwrap
import traceback

import click

from dlmine import __version__
from dlmine.backend.runtime import quiet_backend_logs
from dlmine.errors import DlmineError

quiet_backend_logs()

# command -> "module:function"; `dlmine --help` lists them without importing the modules
COMMANDS = {
    "train": ("dlmine.cli.train:train", "Train CONFIG, evaluate it on the test split, print the "
              "run directory."),
    "launch": ("dlmine.cli.train:launch", "Train CONFIG data-parallel in N processes on this "
               "machine (JAX backend)."),
    "check": ("dlmine.cli.check:check", "Validate CONFIG and build its model on the data's "
              "shape, without training."),
    "evaluate": ("dlmine.cli.results:evaluate", "Evaluate a finished run from RUN_DIR alone; "
                 "writes RUN_DIR/eval.json."),
    "predict": ("dlmine.cli.results:predict", "Predict INPUT with a run's preprocessing and "
                "model."),
    "report": ("dlmine.cli.results:report", "Write RUN_DIR/report/: PNG plots and report.html, "
               "one self-contained page; print its path."),
    "runs": ("dlmine.cli.results:runs", "List every run under ROOT (default: $DLMINE_RUNS_ROOT "
             "or runs): status, metrics, duration."),
    "compare": ("dlmine.cli.results:compare", "Compare RUN_A RUN_B [...]: the config keys that "
                "differ and the metrics side by side."),
    "export": ("dlmine.cli.results:export", "Export a run's model, load it back and check it "
               "predicts the same; print its path."),
    "explain": ("dlmine.cli.results:explain", "Explain what a run learned: global importance "
                "and per-sample attributions, written to RUN_DIR/explain/."),
    "recommend": ("dlmine.cli.recommend:recommend", "The top K items of a user (--user) or "
                  "of many (--users FILE) from a recommender run."),
    "similar": ("dlmine.cli.recommend:similar", "The items nearest to an item (--item) by a "
                "recommender run's learned item vectors (cosine)."),
    "serve": ("dlmine.cli.serve:serve_command", "Serve a run over HTTP: GET /health, /metadata; "
              "POST /predict (/recommend, /similar)."),
    "tune": ("dlmine.cli.tune:tune", "Search the tune: space of CONFIG with Optuna, one run per "
             "trial; print the study directory."),
}


# click >= 8.2 shows the help for a bare `dlmine` through a UsageError of its own
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _short_help(text: str, limit: int) -> str:
    """The first sentence of `text` (its first paragraph), shortened at a word to `limit`
    characters with `...`: what click's deprecated `make_default_short_help` gives."""
    words = text.partition("\n\n")[0].split()
    for i, word in enumerate(words):
        if word.endswith(".") and (i == len(words) - 1 or not words[i + 1][0].islower()):
            words = words[:i + 1]
            break
    return textwrap.shorten(" ".join(words), max(limit, 3), placeholder="...",
                            break_on_hyphens=False)


def _one_line(exc: click.UsageError) -> str:
    """click's message on one line: it lists the choices of an option one per line."""
    return re.sub(r":\n\t", ": ", exc.format_message()).replace(",\n\t", ", ")


class Group(click.Group):
    """Loads each command from its module when it runs, and turns dlmine's exceptions into
    messages and exit codes."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, _, attribute = COMMANDS[name][0].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of `--help`, from `COMMANDS`: no command module is imported."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, _short_help(help_, limit)) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except _NO_ARGS_IS_HELP:  # `dlmine` alone: the help, as click prints it
            raise
        except click.UsageError as exc:  # `dlmine --bogus`: the format of every exit 2
            click.echo(f"Error: {_one_line(exc)}", err=True)
            ctx.exit(exc.exit_code)

    def invoke(self, ctx: click.Context):
        debug = ctx.params.get("debug", False)
        try:
            return super().invoke(ctx)
        except DlmineError as exc:
            if debug:
                traceback.print_exc()
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            if debug:
                traceback.print_exc()
            click.echo("Error: interrupted", err=True)
            ctx.exit(130)
        except _NO_ARGS_IS_HELP:
            raise
        except click.UsageError as exc:  # one format for every exit 2: no `Usage:`/`Try` lines
            if debug:
                traceback.print_exc()
            click.echo(f"Error: {_one_line(exc)}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # a bug in dlmine: said so, never dressed as a user error
            if debug:
                traceback.print_exc()
            else:
                click.echo(f"Error: internal error in dlmine: {type(exc).__name__}: {exc} "
                           "(run with --debug for the traceback)", err=True)
            ctx.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dlmine")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def main(debug: bool) -> None:
    """dlmine: declarative deep learning for data mining, from one YAML file."""


if __name__ == "__main__":
    main()
