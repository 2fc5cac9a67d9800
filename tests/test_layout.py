"""dlmine's layout: no import cycles, no private names across modules, imports where they belong.

Read from the source with `ast` (nothing is imported), so the rules hold for every module,
imported by the other tests or not.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "dlmine"
# Libraries whose import takes seconds (or that are optional extras): imported inside the
# functions that need them, so that `dlmine --help` and a config error answer at once.
HEAVY = {"keras", "tensorflow", "jax", "optuna", "matplotlib", "onnx", "onnxruntime",
         "tf2onnx", "pandas", "sklearn", "PIL", "scipy", "mlflow"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def imports(tree: ast.Module, local: bool):
    """(imported dlmine module, imported names, node) of the module's top-level imports, or
    of those inside its functions (`local`)."""
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if (id(node) in top) == local:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, [a.name for a in node.names], node


def dlmine_targets(module: str, names: list[str]) -> list[str]:
    """The dlmine modules an import statement loads: `from dlmine.x import y` loads
    dlmine.x.y when y is a module, else dlmine.x."""
    if not module.startswith("dlmine"):
        return []
    subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
    return subs if subs and len(subs) == len(names) else [module, *subs]


def graph(local: bool = True) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, tree in TREES.items():
        for flag in (False, True) if local else (False,):
            for module, names, _ in imports(tree, flag):
                edges[name].update(t for t in dlmine_targets(module, names)
                                   if t != name and t in MODULES)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def heavy_at_top(module: str) -> bool:
    return any(name.split(".")[0] in HEAVY for name, _, _ in imports(TREES[module], False))


def test_there_are_no_import_cycles_among_dlmine_modules():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_another_modules_private_names():
    private = [f"{name}: from {module} import {n}" for name, tree in TREES.items()
               for flag in (False, True) for module, names, _ in imports(tree, flag)
               if module.startswith("dlmine") for n in names
               if n.startswith("_") and not n.startswith("__")]
    assert private == []


def test_heavy_libraries_are_imported_inside_functions_only():
    at_top = [f"{name}: {module}" for name, tree in TREES.items()
              for module, _, _ in imports(tree, False) if module.split(".")[0] in HEAVY
              and not (name.endswith(("batches", "callbacks", "state", "layers", "shares"))
                       or name in ("dlmine.tune.study", "dlmine.tune.report"))]
    assert at_top == []


def test_dlmine_modules_are_imported_inside_functions_only_when_they_import_keras():
    """A function-local import of a dlmine module is allowed only for a module that imports
    a heavy library (Keras) at its top: a Keras subclass, whose import is the cost."""
    light = [f"{name}: {target}" for name, tree in TREES.items()
             for module, names, _ in imports(tree, True)
             for target in dlmine_targets(module, names)
             if target in MODULES and not heavy_at_top(target)]
    assert light == []


def test_the_packages_show_the_stages():
    stages = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert stages == ["backend", "cli", "config", "data", "model", "results", "train", "tune"]


def test_config_imports_no_other_stage():
    config = {name: targets for name, targets in graph().items()
              if name.startswith("dlmine.config")}
    outside = sorted({t for targets in config.values() for t in targets
                      if not t.startswith("dlmine.config") and t != "dlmine.errors"})
    assert outside == []
