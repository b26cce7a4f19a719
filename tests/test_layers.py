"""The package's layers import only downward (README, *Code map*): checked on the source with ast."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "archsearch"

# Lower numbers sit lower: a module may import its own layer or lower ones, never higher.
LAYERS = {
    "errors": 0, "notes": 0, "platform": 0, "sources": 0,
    "graph": 1, "nn": 2, "passes": 3,
    "train": 4, "data": 4, "io": 4,
    "render": 5,
    "pipeline": 6,
    "runtime": 7, "tools": 7, "api": 7,
    "cli": 8, "__main__": 9, "__init__": 9,
}


def _layer(module: str) -> int:
    parts = module.split(".")
    if parts[0] == "backbones":
        return 0
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    found += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    return [m for m in found if m.split(".")[0] in ("archsearch", "backbones")]


def test_every_module_has_a_layer():
    tops = {p.stem if p.parent == PACKAGE else p.relative_to(PACKAGE).parts[0] for p in PACKAGE.rglob("*.py")}
    assert tops <= set(LAYERS), f"give {sorted(tops - set(LAYERS))} a layer here and in README's code map"


def test_imports_only_go_down():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        upward += [f"{module} imports {t}" for t in _imports(path) if _layer(t) > _layer(module)]
    assert not upward, upward
