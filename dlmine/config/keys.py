"""Dotted keys: `model.layers[0].Conv2D.filters` <-> a key path, and what differs between configs.

`--set`, `tune.space`, `dlmine compare` and `train --resume`'s list of changed keys all
speak of config keys this way.
"""

from __future__ import annotations

import re
from typing import Any

KeyPath = tuple  # ("model", "layers", 0, "Conv2D", "filters")
_NAME = re.compile(r"[^\W\d]\w*")  # an identifier (unicode letters too): epochs, índice
_INDEX = re.compile(r"\[(\d+)\]")
_QUOTED = re.compile(r"""\[(["'])(.+?)\1\]""")  # any other key: columns["od280/od315"]


def dotted(path: KeyPath) -> str:
    """`("model", "layers", 0, "Dense")` -> `model.layers[0].Dense`; a key that is not an
    identifier is quoted: `dataset.columns["monthly-charges"]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _NAME.fullmatch(str(part)) or (out and parse(str(part))):  # tune.space's keys
            out += f".{part}" if out else str(part)
        else:
            quote = "'" if '"' in str(part) else '"'
            out += f"[{quote}{part}{quote}]"
    return out


def parse(key: str) -> KeyPath | None:
    """`model.layers[0].Conv2D.filters` (or `dataset.columns["a/b"]`) -> a key path, or None
    if it is not one."""
    parts: list = []
    pos = 0
    while pos < len(key):
        if not parts or key[pos] == ".":
            start = pos + (1 if parts else 0)
            name = _NAME.match(key, start)
            quoted = None if parts else _QUOTED.match(key, start)
            if name:
                parts.append(name.group())
                pos = name.end()
            elif quoted:
                parts.append(quoted.group(2))
                pos = quoted.end()
            else:
                return None
            continue
        index, quoted = _INDEX.match(key, pos), _QUOTED.match(key, pos)
        if index:
            parts.append(int(index.group(1)))
            pos = index.end()
        elif quoted:
            parts.append(quoted.group(2))
            pos = quoted.end()
        else:
            return None
    return tuple(parts) or None


def all_keys(node: Any, path: KeyPath = ()) -> list[KeyPath]:
    """Every key path in a nested mapping (lists indexed), parents before their children."""
    keys = [path] if path else []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for part, child in items:
        keys.extend(all_keys(child, path + (part,)))
    return keys


def flatten(value: Any, prefix: str = "") -> dict:
    """Nested mappings (and lists of mappings) as dotted keys: `{"model.layers[1].Dense.units": 8}`."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    if isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


ABSENT = "<absent>"


def diff(old: dict, new: dict) -> list[str]:
    """`training.epochs: 5 -> 10` for every dotted key whose value differs, in key order of
    `old` then of the keys only `new` has."""
    a, b = flatten(old), flatten(new)
    return [f"{key}: {a.get(key, ABSENT)!r} -> {b.get(key, ABSENT)!r}"
            for key in dict.fromkeys([*a, *b]) if a.get(key, ABSENT) != b.get(key, ABSENT)]
