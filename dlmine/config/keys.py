"""Dotted keys: `model.layers[0].Conv2D.filters` <-> a key path, and what differs between configs.

`--set`, `tune.space`, `dlmine compare` and `train --resume`'s list of changed keys all
speak of config keys this way.
"""

from __future__ import annotations

import re
from typing import Any

KeyPath = tuple  # ("model", "layers", 0, "Conv2D", "filters")
_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def dotted(path: KeyPath) -> str:
    """`("model", "layers", 0, "Dense")` -> `model.layers[0].Dense`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse(key: str) -> KeyPath | None:
    """`model.layers[0].Conv2D.filters` -> a key path, or None if it is not one."""
    parts: list = []
    for segment in key.split("."):
        pos, found = 0, False
        while pos < len(segment):
            match = _PART.match(segment, pos)
            if not match or (match.group(1) and found):
                return None
            parts.append(match.group(1) if match.group(1) else int(match.group(2)))
            pos, found = match.end(), True
        if not found:
            return None
    return tuple(parts)


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
