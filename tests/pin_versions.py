"""Pin each registered component's behaviour ``version`` to the code it covers.

``python -m tests.pin_versions`` rewrites ``tests/fixtures/code_versions.json``. Run it after a change
to a method, head, balancer or dataset adapter *once you have decided* whether the change alters what
the component computes: if it does, bump the class's ``version`` first (records made by the older code
are then re-run, never reused); if it does not (a refactor, a docstring), just re-pin.
``tests/test_versions.py`` fails until one of the two is done.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import json
from pathlib import Path

from mmbench.registry import BALANCERS, DATASETS, HEADS, METHODS

PIN_FILE = Path(__file__).parent / "fixtures" / "code_versions.json"
REGISTRIES = {"method": METHODS, "head": HEADS, "balancer": BALANCERS, "dataset": DATASETS}
#: sibling modules a component's digest leaves out: the torch-free configs (hashed into run ids as
#: values) and the interface base classes
SHARED = ("params", "options", "base", "suite_options")


def _code(path: Path) -> str:
    """The module's code without docstrings or comments (``ast.dump``), so prose edits do not count."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def covered_modules(cls: type) -> list[Path]:
    """The class's module and the sibling modules of its package it imports (its equations and helpers)."""
    module = importlib.import_module(cls.__module__)
    path = Path(inspect.getfile(module))
    out = [path]
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module] if node.module else [a.name for a in node.names]
            for name in names:
                sibling = path.parent / f"{name}.py"
                if name not in SHARED and sibling.is_file():
                    out.append(sibling)
    return sorted(set(out))


def current() -> dict[str, dict[str, object]]:
    """``kind:name`` -> version and code digest of every registered component."""
    out = {}
    for kind, reg in REGISTRIES.items():
        for name in reg.names():
            cls = reg.get(name)
            digest = hashlib.sha256("".join(_code(p) for p in covered_modules(cls)).encode()).hexdigest()[:16]
            files = [str(p.relative_to(Path(__file__).parent.parent)) for p in covered_modules(cls)]
            out[f"{kind}:{name}"] = {"version": int(getattr(cls, "version", 1)), "code": digest, "files": files}
    return out


if __name__ == "__main__":
    PIN_FILE.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n")
    print(f"pinned {len(current())} components in {PIN_FILE}")
