"""YAML -> a validated, fully resolved `Config`, or a `ConfigError` listing every problem."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from dlmine.config.checks import resolve, run_rules
from dlmine.config.loading import Sources, apply_overrides, build, describe_value, parse_yaml, source_name
from dlmine.config.schema import REQUIRED, Config
from dlmine.errors import ConfigError, Problem, UsageError

__all__ = ["Check", "Config", "LoadedConfig", "load_config", "to_yaml"]

Check = Callable[[Config, Sources, list[Problem]], list[Problem]]


@dataclass
class LoadedConfig:
    """A config and where each of its keys came from, for messages about it later."""

    config: Config
    sources: Sources
    path: Path


def load_config(path, overrides=(), *, seed: int | None = None, checks: Sequence[Check] = ()
                ) -> LoadedConfig:
    """Read, override, validate and resolve a config file.

    Args:
        path: the YAML file.
        overrides: `KEY=VALUE` strings from `--set`, VALUE parsed as YAML.
        seed: `--seed`, which wins over `seed:` in the file.
        checks: more checks of the resolved config, each `(config, sources, problems so
            far) -> problems`, whose problems are reported with the config's own (the model
            stage adds its layer, optimizer, loss and metric checks this way:
            `dlmine.model.checks.load_checked_config`).

    Returns:
        The resolved config with its sources.

    Raises:
        ConfigError: with every problem found, each as `FILE:LINE: dotted.key: message`.
    """
    path = Path(path)
    name = source_name(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"config file not found: {name}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file {name}: {exc}") from None
    data, sources = parse_yaml(text, name)
    if not isinstance(data, dict):
        raise ConfigError([Problem(f"{name}:1", "", "expected a mapping with the sections "
                                   f"dataset, model, training; received {describe_value(data)}")])
    problems = apply_overrides(data, overrides, sources)
    _name_an_optimizer_made_by_set(data, sources)
    if seed is not None:
        data["seed"] = seed
    config = build(Config, data, (), sources, problems, REQUIRED)
    resolve(config, default_name=path.stem)
    problems.extend(run_rules(config, sources, problems))
    for check in checks:
        problems.extend(check(config, sources, problems))
    if problems:
        raise ConfigError(sorted(problems, key=_reading_order))
    for key in ("path", "test_path"):
        if getattr(config.dataset, key):
            setattr(config.dataset, key, str((path.parent / getattr(config.dataset, key)).resolve()))
    for key in ("items", "users"):
        if getattr(config.dataset.interactions, key):
            table = path.parent / getattr(config.dataset.interactions, key)
            setattr(config.dataset.interactions, key, str(table.resolve()))
    return LoadedConfig(config, sources, path)


def _name_an_optimizer_made_by_set(data: dict, sources) -> None:
    """`--set training.optimizer.learning_rate=X` on a file without `optimizer:` changes the
    default optimizer's learning rate, rather than making an optimizer without a name."""
    optimizer = (data.get("training") or {}).get("optimizer") if isinstance(
        data.get("training"), dict) else None
    if (isinstance(optimizer, dict) and "name" not in optimizer
            and ("training", "optimizer") not in sources.lines):
        optimizer["name"] = "adam"


def _reading_order(problem: Problem) -> tuple:
    """`--set` problems first, then the file's problems by line."""
    if problem.source.startswith("--set"):
        return (0, 0)
    line = problem.source.rpartition(":")[2]
    return (1, int(line) if line.isdigit() else 0)


def to_yaml(config: Config) -> str:
    """The resolved config as YAML, in schema order, loadable again by `load_config`."""
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False, default_flow_style=None)
