"""What a study leaves at its end: the table of trials, `best.yaml` and two plots.

The plots are drawn with matplotlib's object API on the Agg canvas (`dlmine.results.plots`), so no
global backend is switched: `history.png` (every trial's value, the best so far) and
`importances.png` (how much each searched key mattered, by Optuna's default importance
evaluator, from two complete trials on).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from dlmine.config import to_yaml
from dlmine.console import Reporter
from dlmine.errors import DlmineError
from dlmine.model.checks import load_checked_config
from dlmine.results import plots
from dlmine.rundir import CONFIG, atomic_write
from dlmine.tune.space import override

BEST_YAML = "best.yaml"
HISTORY_PNG = "history.png"
IMPORTANCES_PNG = "importances.png"


def summarize(study: optuna.Study, folder: Path, metric: str, reporter: Reporter) -> None:
    """Print the table of trials; write `best.yaml` and the plots into the study directory.

    Raises:
        DlmineError: no trial completed, so there is no best one.
    """
    trials = shown_trials(study)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    if not reporter.quiet:
        _print_wide(reporter.err, trials_table(trials, metric, best))
    write_plots(study, folder, metric, reporter)
    if best is None:
        raise DlmineError(f"no trial of the study completed ({len(trials)} trial(s)); see the "
                          f"table above and the run.json of each trial in {folder}")
    atomic_write(folder / BEST_YAML, best_config(best, folder))
    say(reporter, f"best: trial {best.number}, {metric} {best.value:.4g}; "
        f"dlmine train {folder / BEST_YAML}")


def summarize_elsewhere(study: optuna.Study, metric: str, reporter: Reporter, note: str) -> None:
    """The end of a worker that does not write `best.yaml`: the table of trials, and `note`."""
    if not reporter.quiet:
        trials = shown_trials(study)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        _print_wide(reporter.err, trials_table(trials, metric, study.best_trial if complete else None))
    say(reporter, note)


def shown_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The study's trials, less those failed before they began because another worker had
    taken the study's last slot (`surplus`)."""
    return [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]


def best_config(best: FrozenTrial, folder: Path) -> str:
    """The best trial's resolved config with `tune: null`, as YAML that `dlmine train` runs."""
    run_dir = best.user_attrs.get("run_dir")
    saved = Path(run_dir) / CONFIG if run_dir else None
    if saved is not None and saved.is_file():
        config = load_checked_config(saved).config
    else:  # a trial of another worker of a shared study: the same overrides on the same config
        values = best.user_attrs.get("values", best.params)
        config = load_checked_config(folder / CONFIG, [override(k, v) for k, v in values.items()]).config
    config.tune = None
    return to_yaml(config)


def _print_wide(console: Console, table: Table) -> None:
    """Print a table; to a file or a pipe (a CI log) as wide as it needs, not folded at 80."""
    if not console.is_terminal:
        width = min(240, max(80, console.measure(table, options=console.options.update(
            width=240)).maximum))
        console = Console(file=console.file, highlight=False, width=width)
    console.print(table)


def say(reporter: Reporter, message: str) -> None:
    """A line on stderr that is not wrapped at 80 columns when stderr is a file (CI logs)."""
    if not reporter.quiet:
        reporter.err.print(message, markup=False, soft_wrap=True)


def trials_table(trials: list[FrozenTrial], metric: str, best: FrozenTrial | None) -> Table:
    """One row per trial: number, state, value, one column per searched key, duration; the best
    one starred."""
    table = Table(title=f"trials (value: best epoch's {metric})", title_justify="left")
    values = [t.user_attrs.get("values", t.params) for t in trials]
    keys = list(dict.fromkeys(key for row in values for key in row))
    for name in ("trial", "state", "value", *short_names(keys).values(), "duration"):
        justify = "left" if name == "state" else "right"
        table.add_column(name, justify=justify, overflow="fold")  # nothing is cut off
    for trial, row in zip(trials, values, strict=True):
        star = " *" if best is not None and trial.number == best.number else ""
        duration = trial.duration.total_seconds() if trial.duration else None
        table.add_row(f"{trial.number}{star}", trial.state.name.lower(), shown(trial.value),
                      *(shown(row.get(key)) for key in keys),
                      "-" if duration is None else f"{duration:.1f}s")
    return table


def short_names(keys: list[str]) -> dict[str, str]:
    """Column names: the last two parts of each dotted key, more where another key ends alike.

    Example:
        >>> short_names(["model.layers[4].Dropout.rate", "training.optimizer.learning_rate"])
        {'model.layers[4].Dropout.rate': 'Dropout.rate', 'training.optimizer.learning_rate': \
'optimizer.learning_rate'}
    """
    parts = {key: key.split(".") for key in keys}

    def name(key: str) -> str:
        for size in range(2, len(parts[key])):
            suffix = parts[key][-size:]
            if all(other[-size:] != suffix for k, other in parts.items() if k != key):
                return ".".join(suffix)
        return key

    return {key: name(key) for key in keys}


def shown(value) -> str:
    """A value as the table shows it: 4 significant digits for a number, `-` for none."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_plots(study: optuna.Study, folder: Path, metric: str, reporter: Reporter) -> None:
    """`history.png` and `importances.png` in `folder`; a plot without enough trials is skipped."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if trials:
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        atomic_write(folder / HISTORY_PNG, history_plot(trials, metric, maximize))
    if sum(t.state == TrialState.COMPLETE for t in trials) < 2:
        reporter.info(f"{IMPORTANCES_PNG} not drawn: it needs two complete trials")
        return
    with warnings.catch_warnings():  # "importances will be equal" when the trials tie
        warnings.simplefilter("ignore")
        importances = optuna.importance.get_param_importances(study)
    if importances:
        atomic_write(folder / IMPORTANCES_PNG, importances_plot(importances))


def history_plot(trials: list[FrozenTrial], metric: str, maximize: bool) -> bytes:
    """Each trial's value (pruned ones hollow, at their last epoch) and the best so far.

    Returns:
        PNG bytes.
    """
    fig, ax = plots._figure()
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.value is not None]
    ax.scatter([t.number for t in complete], [t.value for t in complete], color=plots.TRAIN,
               s=22, label="complete", zorder=3)
    if pruned:
        ax.scatter([t.number for t in pruned], [t.value for t in pruned], facecolors="none",
                   edgecolors="#9ca3af", s=22, label="pruned (last epoch)", zorder=3)
    if complete:
        values = np.array([t.value for t in complete])
        best = np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values)
        ax.step([t.number for t in complete], best, where="post", color=plots.VALIDATION,
                linewidth=1.8, label="best so far")
    plots._style(ax, "optimisation history", "trial", metric)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(frameon=False)
    return plots._png(fig)


def importances_plot(importances: dict[str, float]) -> bytes:
    """Horizontal bars of each searched key's importance, the largest on top.

    Returns:
        PNG bytes.
    """
    names = list(importances)
    fig, ax = plots._figure(6.4, max(2.4, 1.3 + 0.4 * len(names)))
    positions = np.arange(len(names))
    ax.barh(positions, [importances[n] for n in names], color=plots.ACCENT, height=0.6)
    ax.set_yticks(positions, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    for y, name in enumerate(names):
        ax.text(importances[name] + 0.01, y, f"{importances[name]:.2f}", va="center", fontsize=8)
    plots._style(ax, "parameter importances", "importance", "")
    return plots._png(fig)
