"""Reading a config: safe YAML with line numbers, `--set` overrides, and the schema.

`yaml.safe_load`'s constructor (`yaml.SafeLoader`) is the only one used; before it runs,
the document is composed into nodes so that every key has a line, and so that tags, alias
bombs and absurd nesting are refused with a clear message before anything is built. The
text is parsed once: the same loader then constructs the document from those nodes.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import reprlib
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from dlmine.config.keys import KeyPath, dotted, parse
from dlmine.errors import ConfigError, Problem

UNION_TYPES = (Union, types.UnionType)
MAX_BYTES = 1024 * 1024
MAX_NODES = 100_000  # after expanding aliases: a real config has a few hundred
MAX_DEPTH = 64
Path_ = KeyPath


class Sources:
    """Where each key of a config came from: a line of the file or a `--set`."""

    def __init__(self, filename: str, lines: dict | None = None):
        self.filename = filename
        self.lines: dict[Path_, int] = dict(lines or {})
        self.overrides: dict[Path_, str] = {}

    def where(self, path: Path_) -> str:
        """Where `path` was set: its own `--set` or one above it (which replaced what the
        file had there), one that set a key below it, or its line."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.overrides:
                return self.overrides[path[:n]]
        below = [o for p, o in self.overrides.items() if p[:len(path)] == path and path]
        if below:
            return below[0]
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return f"{self.filename}:{self.lines[path[:n]]}"
        return f"{self.filename}:1"

    def problem(self, path: Path_, message: str) -> Problem:
        return Problem(self.where(path), dotted(path), message)


def suggest(name: str, choices) -> str:
    """`"; did you mean 'epochs'?"`, or nothing when no choice is close."""
    name, choices = str(name), [str(c) for c in choices]
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    lower = {c.lower(): c for c in choices}
    if not close and name.lower() in lower:  # another case
        close = [lower[name.lower()]]
    if not close and len(name) >= 3:  # an abbreviation of one name: `acc`, `val_acc`
        starting = [c for c in lower.values() if c.lower().startswith(name.lower())]
        close = starting if len(starting) == 1 else []
    return f"; did you mean '{close[0]}'?" if close else ""


_SHORT = reprlib.Repr()  # bounded: an alias bomb must not be expanded to be shown
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring = 3, 6, 6, 60
KINDS = {str: "string", bool: "boolean", int: "integer", float: "number", list: "list",
         dict: "mapping", type(None): "null"}


def shorten(text: str, limit: int = 60) -> str:
    """`text`, cut to `limit` characters with an ellipsis when longer."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def received(value: Any) -> str:
    """`received 'ten' (string)`: the value, shortened, and its YAML kind."""
    if value is None:
        return "received null"
    shown = ("true" if value else "false") if isinstance(value, bool) else _SHORT.repr(value)
    shown = shorten(shown)  # true, false and null as YAML spells them
    return f"received {shown} ({KINDS.get(type(value), type(value).__name__)})"


def describe_value(value: Any) -> str:
    """`an integer`, `a string`, `a list`: a value's kind as a sentence says it."""
    kind = KINDS.get(type(value), type(value).__name__)
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def valid_list(name: str, choices, label: str = "Valid") -> str:
    """`; did you mean 'x'? Valid: a, b` or `. Valid: a, b` when nothing is close."""
    hint = suggest(name, choices)
    listed = f"{label}: {', '.join(str(c) for c in sorted(choices, key=str))}" if label == "Valid" \
        else f"{label}: {', '.join(str(c) for c in choices)}"
    return f"{hint} {listed}" if hint else f". {listed}"


# --- YAML --------------------------------------------------------------------------------------

def parse_yaml(text: str, filename: str) -> tuple[Any, Sources]:
    """Parse YAML text safely and map every key path to its line.

    Raises:
        ConfigError: the text is not YAML, holds tags beyond plain YAML, expands to too many
            nodes (alias bombs) or nests too deeply.
    """
    sources = Sources(filename)
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise ConfigError([Problem(f"{filename}:1", "", f"the file is larger than {MAX_BYTES} "
                                   "bytes; a dlmine config is a few hundred lines")])
    with _safe_loader(text) as loader:
        try:
            root = loader.get_single_node()  # what yaml.compose does
        except RecursionError:
            raise ConfigError([Problem(f"{filename}:1", "", "the YAML nests deeper than Python "
                                       "can parse; a dlmine config nests a few levels")]) from None
        except yaml.YAMLError as exc:
            raise ConfigError([_yaml_problem(exc, filename)]) from None
        if root is None:
            raise ConfigError([Problem(f"{filename}:1", "", "the file is empty; expected a "
                                       "mapping with the sections dataset, model, training")])
        problems: list[Problem] = []
        _check_nodes(root, sources, problems)
        return loader.construct_document(root), sources  # what yaml.safe_load builds


@contextmanager
def _safe_loader(text: str) -> Iterator[yaml.SafeLoader]:
    """One `yaml.SafeLoader` over `text`: compose with it, check the nodes, then construct
    from them (`yaml.safe_load` would parse the text a second time)."""
    loader = yaml.SafeLoader(text)
    try:
        yield loader
    finally:
        loader.dispose()


def _check_nodes(root, sources: Sources, problems: list) -> None:
    filename = sources.filename
    if _expanded_size(root, {}) > MAX_NODES:
        raise ConfigError([Problem(f"{filename}:{root.start_mark.line + 1}", "",
                                   f"the YAML expands to more than {MAX_NODES} nodes through "
                                   "anchors and aliases; refused (a billion-laughs document?)")])
    _walk(root, (), sources, problems, 0)
    if problems:
        raise ConfigError(problems)


def _yaml_problem(exc: yaml.YAMLError, filename: str) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark else 1
    what = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    detail = f"{context}, {what}" if context else what
    return Problem(f"{filename}:{line}", "", f"invalid YAML: {detail}")


def _expanded_size(node, memo: dict) -> int:
    key = id(node)
    if key not in memo:
        memo[key] = MAX_NODES + 1  # a node that reaches itself is refused too
        if isinstance(node, yaml.MappingNode):
            size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            size = 1 + sum(_expanded_size(v, memo) for v in node.value)
        else:
            size = 1
        memo[key] = min(size, MAX_NODES + 1)
    return memo[key]


_PLAIN_TAG = re.compile(r"^tag:yaml\.org,2002:(str|int|float|bool|null|map|seq|binary|timestamp|"
                        r"set|omap|pairs|merge|value)$")


# A plain scalar such as `1e-3` or `5E4`, which YAML 1.1 (PyYAML) leaves a string for want
# of a dot; quoted ('1e-3') it stays one.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$")


def _key_value(key: yaml.ScalarNode):
    """A mapping key as `safe_load` will build it: `2:` is the integer 2, not the text '2'."""
    if key.tag == "tag:yaml.org,2002:int":
        try:
            return int(key.value.replace("_", ""), 0)
        except ValueError:
            return key.value
    return key.value


def _walk(node, path: Path_, sources: Sources, problems: list, depth: int) -> None:
    line = node.start_mark.line + 1
    if depth > MAX_DEPTH:
        problems.append(Problem(f"{sources.filename}:{line}", dotted(path),
                                f"nested deeper than {MAX_DEPTH} levels; refused"))
        return
    if not _PLAIN_TAG.match(node.tag or ""):
        problems.append(Problem(f"{sources.filename}:{line}", dotted(path),
                                f"the tag '{node.tag}' is not allowed: dlmine reads plain YAML "
                                "only (yaml.safe_load) and never builds Python objects; "
                                "nothing was executed"))
        return
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:timestamp":
        node.tag = "tag:yaml.org,2002:str"  # `cutoff: 2021-06-01` is the text as written
    elif isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str" \
            and node.style is None and _EXPONENT_FLOAT.match(node.value):
        node.tag = "tag:yaml.org,2002:float"  # YAML 1.2 reads `1e-3` as a number; 1.1 as text
    if isinstance(node, yaml.MappingNode):
        seen: dict = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                problems.append(Problem(f"{sources.filename}:{key.start_mark.line + 1}",
                                        dotted(path), "expected plain keys, received a "
                                        "mapping or list used as a key"))
                continue
            if not _PLAIN_TAG.match(key.tag or ""):
                _walk(key, path, sources, problems, depth + 1)  # reports the tag
                continue
            name = _key_value(key)
            child = path + (name,)
            key_line = key.start_mark.line + 1
            if name in seen:
                problems.append(Problem(f"{sources.filename}:{key_line}", dotted(child),
                                        f"duplicate key (first given at line {seen[name]}); "
                                        "YAML would silently keep only the last one"))
                continue
            seen[name] = key_line
            sources.lines.setdefault(child, key_line)
            _walk(value, child, sources, problems, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            sources.lines.setdefault(path + (index,), item.start_mark.line + 1)
            _walk(item, path + (index,), sources, problems, depth + 1)


# --- --set KEY=VALUE ---------------------------------------------------------------------------

def apply_overrides(data: dict, overrides, sources: Sources) -> list[Problem]:
    """Set each `KEY=VALUE` (VALUE parsed as YAML) into the raw config; return problems."""
    problems = []
    for item in overrides:
        origin = f"--set {shorten(item)}"  # a value of pages must not flood the message
        key, sep, raw = item.partition("=")
        path = parse(key.strip()) if sep else None
        if path is None:
            problems.append(Problem(origin, "", "expected KEY=VALUE with a dotted key such as "
                                    "training.epochs=5 or model.layers[0].Dense.units=64"))
            continue
        try:
            value = _override_value(raw, origin)
        except ConfigError as exc:
            problems.extend(Problem(origin, dotted(path + _sub_path(p.key)), p.message)
                            for p in exc.problems)
            continue
        error = _set_path(data, path, value)
        if error:
            problems.append(Problem(origin, dotted(path), error))
        else:
            sources.overrides[path] = origin
    return problems


def _override_value(raw: str, origin: str) -> Any:
    """VALUE of `--set KEY=VALUE`, through the same guards as a file; text that is not
    YAML is taken as a string, unless it opens a flow collection or a quote (`{a: [1`),
    whose YAML error is then reported."""
    if not raw.strip():
        return None
    with _safe_loader(raw) as loader:
        try:
            root = loader.get_single_node()
        except RecursionError:
            raise ConfigError([Problem(origin, "", "the value nests deeper than Python can "
                                       "parse; refused")]) from None
        except yaml.YAMLError as exc:
            if raw.lstrip()[:1] in ("{", "[", '"', "'"):
                raise ConfigError([Problem(origin, "", _yaml_problem(exc, origin).message)]) \
                    from None
            return raw
        if root is None:  # only a comment: null, as an empty value
            return None
        problems: list[Problem] = []
        _check_nodes(root, Sources(origin), problems)
        if problems:
            raise ConfigError(problems)
        return loader.construct_document(root)


def _one_layer(node: dict, path: Path_) -> str | None:
    """The name of the layer item `node` (`{Dense: {...}}`, an element of a list), if it is one."""
    if not path or not isinstance(path[-1], int) or len(node) != 1:
        return None
    (name, args), = node.items()
    return name if isinstance(name, str) and name[:1].isupper() and isinstance(args, dict | None) \
        else None


def _sub_path(key: str) -> Path_:
    return parse(key) or () if key else ()


def _set_path(data: Any, path: Path_, value: Any) -> str | None:
    node = data
    for depth, part in enumerate(path[:-1]):
        nxt = path[depth + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return f"{dotted(path[:depth + 1])} does not exist (the list is shorter)"
            node = node[part]
            continue
        if not isinstance(node, dict):
            return f"{dotted(path[:depth])} is not a mapping, so it has no key '{part}'"
        if node.get(part) is None:
            layer = _one_layer(node, path[:depth])
            if layer and part != layer:
                return (f"{dotted(path[:depth])} is a {layer} layer, so it has no '{part}'"
                        f"{suggest(part, [layer])}")
            if isinstance(nxt, int):
                return f"{dotted(path[:depth + 1])} is not a list in the config"
            node[part] = {}
        node = node[part]
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            return f"{dotted(path)} does not exist (the list is shorter)"
    elif not isinstance(node, dict):
        return f"{dotted(path[:-1])} is not a mapping, so it has no key '{last}'"
    node[last] = value
    return None


# --- the schema --------------------------------------------------------------------------------

def build(cls, data: Any, path: Path_, sources: Sources, problems: list, required=frozenset()):
    """Check `data` against dataclass `cls` and build it; problems go to `problems`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(sources.problem(path, f"expected a mapping of {_keys_of(cls)}, "
                                              f"{received(data)}"))
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            problems.append(sources.problem(path + (key,), "unknown key"
                                            + valid_list(key, list(fields), "Valid keys")))
    values = {}
    for name, spec in fields.items():
        if name not in data:
            if path + (name,) in required:
                problems.append(sources.problem(path, f"missing required key '{name}'"))
            continue
        child = path + (name,)
        value = _coerce(hints[name], data[name], child, sources, problems, required)
        if value is _INVALID:
            continue
        check = spec.metadata.get("check")
        message = check(value) if check and value is not None else None
        if message:
            problems.append(sources.problem(child, f"{message}, {received(data[name])}"))
            continue
        values[name] = value
    return cls(**values)


_INVALID = object()


def _coerce(tp, value, path, sources, problems, required):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path, sources, problems, required)
    if origin in UNION_TYPES:
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            trial: list = []
            result = _coerce(option, value, path, sources, trial, required)
            if result is not _INVALID and not trial:
                return result
        if len(options) == 1 or (dataclasses.is_dataclass(options[0]) and isinstance(value, dict)):
            return _coerce(options[0], value, path, sources, problems, required)
        words = [w for arm in options if typing.get_origin(arm) is Literal
                 for w in typing.get_args(arm)]
        hint = suggest(value, words) if words and isinstance(value, str) else ""
        problems.append(sources.problem(path, f"expected {describe(tp)}, {received(value)}{hint}"))
        return _INVALID
    ok = _matches(tp, origin, args, value)
    if ok is True:
        if origin is list and args and args[0] is not Any:
            items = [_coerce(args[0], v, path + (i,), sources, problems, required)
                     for i, v in enumerate(value)]
            return _INVALID if _INVALID in items else items
        return float(value) if tp is float else value
    if tp is float and isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d*)?\s*/\s*\d+(\.\d*)?\s*", value):
        top, bottom = (float(x) for x in value.split("/"))
        if bottom:
            return top / bottom
    hint = suggest(value, args) if origin is Literal and isinstance(value, str) else ""
    problems.append(sources.problem(path, f"expected {describe(tp)}, {received(value)}{hint}"))
    return _INVALID


def _matches(tp, origin, args, value) -> bool:
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp is dict or origin is dict:
        return isinstance(value, dict)
    if origin is list:
        return isinstance(value, list)
    return tp is Any


def describe(tp) -> str:
    """A type as a user reads it: `an integer`, `one of: a, b`, `a list of strings or null`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in UNION_TYPES:
        parts = [describe(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return text + " or null" if type(None) in args else text
    if origin is Literal:
        return "one of: " + ", ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in args)
    if origin is list:
        if not args or args[0] is Any:
            return "a list"
        return f"a list of {describe(args[0]).split(' ', 1)[1]}s"
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {_keys_of(tp)}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            dict: "a mapping"}.get(tp, str(tp))


def _keys_of(cls) -> str:
    return "keys " + ", ".join(f.name for f in dataclasses.fields(cls))


def source_name(path: Path) -> str:
    """How a config file is named in messages: relative to the working directory if inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
