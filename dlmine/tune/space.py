"""The search space of a `tune:` section: distributions, and keys checked against the config.

Every key of `tune.space` is a dotted key as `--set` takes it (`training.optimizer.learning_rate`,
`model.layers[0].Conv2D.filters`). Before any trial starts, `check_space` makes sure that each
key exists in the resolved config (layer and optimizer arguments may also be ones Keras accepts
but the config leaves at their default), that each distribution is well formed, and that the
config still loads with every choice and both ends of every range; all problems are reported
together, as `FILE:LINE: tune.space.KEY: message`.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dlmine.config import LoadedConfig, to_yaml
from dlmine.config.checks import logged_metrics, not_logged
from dlmine.config.keys import all_keys, dotted, parse
from dlmine.config.loading import received, suggest
from dlmine.errors import ConfigError, Problem, UsageError
from dlmine.model.checks import load_checked_config

DISTRIBUTIONS = ("choice", "int", "uniform", "loguniform")
FORMS = ("{choice: [...]}, {int: [low, high]}, {uniform: [low, high]} or "
         "{loguniform: [low, high]}")
KEY_EXAMPLE = "training.optimizer.learning_rate or model.layers[0].Conv2D.filters"
_SCALARS = (type(None), bool, int, float, str)  # what Optuna stores as a categorical choice


@dataclass(frozen=True)
class Distribution:
    """One searched key: a `choice` of values, or an `int`, `uniform` or `loguniform` range.

    Args:
        kind: one of `DISTRIBUTIONS`.
        values: the choices, or `(low, high)`.
    """

    kind: str
    values: tuple

    def suggest(self, trial, key: str) -> Any:
        """The value an Optuna trial picks for `key`."""
        if self.kind == "choice":
            if all(isinstance(v, _SCALARS) for v in self.values):
                return trial.suggest_categorical(key, list(self.values))
            # lists and mappings are stored as their YAML text and read back
            return yaml.safe_load(trial.suggest_categorical(key, [_yaml(v) for v in self.values]))
        low, high = self.values
        if self.kind == "int":
            return trial.suggest_int(key, low, high)
        return trial.suggest_float(key, low, high, log=self.kind == "loguniform")

    def corners(self) -> list:
        """The values checked against the config before any trial: every choice, both ends."""
        if self.kind in ("choice", "int"):
            return list(self.values)
        return [float(v) for v in self.values]


def parse_distribution(spec: Any) -> Distribution:
    """`{loguniform: [1.0e-4, 1.0e-2]}` -> a `Distribution`.

    Raises:
        ValueError: the message of what was expected and what was received.
    """
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError(f"expected one distribution, {FORMS}; {received(spec)}")
    (kind, args), = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"expected one of: {', '.join(DISTRIBUTIONS)}; received '{kind}'"
                         f"{suggest(kind, DISTRIBUTIONS)}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ValueError(f"choice: expected a non-empty list of values, {received(args)}")
        return Distribution(kind, tuple(args))
    return Distribution(kind, _bounds(kind, args))


def _bounds(kind: str, args: Any) -> tuple:
    bounds = [_number(a, kind) for a in args] if isinstance(args, list) and len(args) == 2 else None
    low_ok = bounds is not None and None not in bounds and (kind != "loguniform" or bounds[0] > 0)
    if not low_ok or bounds[0] >= bounds[1]:
        what = "two integers" if kind == "int" else "two numbers"
        rule = "0 < low < high" if kind == "loguniform" else "low < high"
        raise ValueError(f"{kind}: expected [low, high], {what} with {rule}, {received(args)}")
    return tuple(bounds)


def _number(value: Any, kind: str) -> int | float | None:
    """A bound: an integer for `int`; for ranges also `1e-4`, which YAML reads as a string."""
    if isinstance(value, bool):
        return None
    if kind == "int":
        return value if isinstance(value, int) else None
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None


def override(key: str, value: Any) -> str:
    """`--set` text for a trial's value: `model.layers[0].Conv2D.filters=32`."""
    return f"{key}={_yaml(value)}"


def _yaml(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip()
    return text.removesuffix("...").strip()


def check_space(loaded: LoadedConfig) -> dict[str, Distribution]:
    """The `tune:` section's search space, each key and distribution checked against the config.

    Each value is probed as the trials will apply it: as a `--set` on the resolved config.

    Args:
        loaded: the config.

    Returns:
        `{dotted key: Distribution}`, in the order of the file.

    Raises:
        UsageError: the config has no `tune:` section.
        ConfigError: every problem, as `FILE:LINE: tune.space.KEY: message`.
    """
    tune, src = loaded.config.tune, loaded.sources
    if tune is None:
        raise UsageError(f"{src.filename} has no tune: section; expected tune: {{metric: "
                         "val_loss, space: {KEY: DISTRIBUTION, ...}}, see README.md")
    problems = _metric_problems(loaded)
    if not tune.space:
        problems.append(src.problem(("tune", "space"), "expected at least one key to search, e.g. "
                                    "training.optimizer.learning_rate: {loguniform: [1.0e-4, "
                                    f"1.0e-2]}}; {received(tune.space)}"))
    resolved = dataclasses.asdict(loaded.config)
    space = {}
    with tempfile.TemporaryDirectory(prefix="dlmine-tune-") as folder:
        base = Path(folder) / "resolved.yaml"
        base.write_text(to_yaml(loaded.config), encoding="utf-8")
        for key, spec in tune.space.items():
            messages = _entry_problems(base, resolved, str(key), spec)
            problems.extend(src.problem(("tune", "space", key), m) for m in messages)
            if not messages:
                space[str(key)] = parse_distribution(spec)
    if problems:
        raise ConfigError(problems)
    return space


def _metric_problems(loaded: LoadedConfig) -> list[Problem]:
    """`tune.metric` must be a column that `history.csv` will have, known before any trial."""
    cfg = loaded.config
    metric = cfg.tune.metric
    if metric.startswith("val_") and cfg.dataset.validation_split is None:
        return [loaded.sources.problem(("tune", "metric"), f"'{metric}' needs a validation split, "
                                       "but dataset.validation_split is null; tune a training "
                                       "metric such as 'loss', or set a validation split")]
    logged = logged_metrics(cfg)
    if metric not in logged:
        return [loaded.sources.problem(("tune", "metric"), not_logged(metric, logged))]
    return []


def _entry_problems(base: Path, resolved: dict, key: str, spec: Any) -> list[str]:
    path = parse(key)
    if path is None:
        return [f"expected a dotted key such as {KEY_EXAMPLE}, received '{key}'"]
    messages = []
    key_message = _key_problem(resolved, path)
    if key_message:
        messages.append(key_message)
    try:
        distribution = parse_distribution(spec)
    except ValueError as exc:
        return messages + [str(exc)]
    if messages:
        return messages
    return _probe(base, key, distribution)


def _key_problem(resolved: dict, path: tuple) -> str | None:
    """Why `path` is not a key of the resolved config, or None."""
    if path[0] == "tune":
        return "expected a key outside the tune: section; the search cannot search itself"
    node: Any = resolved
    for depth, part in enumerate(path):
        here = dotted(path[:depth])
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                size = f"has {len(node)} items" if isinstance(node, list) else "is not a list"
                return f"{here} {size}; received index {part}"
            node = node[part]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict) and depth == len(path) - 1 and _takes_arguments(path[:-1]):
            return None  # an argument the config leaves at its default: the probe asks Keras
        elif node is None and depth > 0:
            return None  # a section left null (early_stopping): the probe sets it as --set does
        else:
            keys = [dotted(p) for p in all_keys(resolved) if p[0] != "tune"]
            return "unknown key" + (suggest(dotted(path), keys) or
                                    f"; expected a key of the config such as {KEY_EXAMPLE}")
    return None


def _takes_arguments(path: tuple) -> bool:
    """Layer arguments and the optimizer's: any argument Keras accepts, written or not."""
    layer = len(path) >= 4 and path[:2] in (("model", "layers"), ("preprocessing", "augmentation"))
    return layer or path == ("training", "optimizer")


def _probe(base: Path, key: str, distribution: Distribution) -> list[str]:
    """Load the resolved config with each corner value of `key`; the problems of the first
    value the config refuses (the others would mostly repeat them)."""
    for value in distribution.corners():
        try:
            load_checked_config(base, [override(key, value)])
        except ConfigError as exc:
            return [p.message if p.key in ("", key) else f"{p.key}: {p.message}"
                    for p in exc.problems]
    return []
