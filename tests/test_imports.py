"""Commands that only read configs or records never import torch (nor timm, nor scikit-learn).

``import mmbench.cli`` and ``--help``, ``table``, ``check``, ``stats``, ``validate`` and ``ls`` of
protocols, methods, heads, balancers and encoders are run in one fresh interpreter, in-process, on
the historic record fixtures; after each, ``sys.modules`` must hold none of torch, timm and scikit-learn, and the
command must have succeeded (a command that failed early proves nothing). Their latency against
``python -c "import pandas"`` is measured by ``benchmarks/cli_latency.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "tests" / "fixtures" / "historic_results" / "v1-8f2379f"
REFERENCE = ROOT / "tests" / "fixtures" / "golden" / "v1-8f2379f.csv"
HEAVY = ("torch", "timm", "sklearn")

#: the commands, as argv after ``mmbench``
COMMANDS: list[list[str]] = [
    ["--help"],
    ["table", "-r", str(RECORDS)],
    ["check", "-r", str(RECORDS), "--reference", str(REFERENCE)],
    ["stats", "-r", str(RECORDS)],
    ["validate"],
    ["ls", "protocols"],
    ["ls", "methods"],
    ["ls", "heads"],
    ["ls", "balancers"],
    ["ls", "encoders"],
]

PROBE = """
import contextlib, io, json, sys
heavy = {heavy!r}
report = []
import mmbench.cli
report.append({{"command": "import mmbench.cli", "code": 0, "out": 1,
               "heavy": sorted(m for m in heavy if m in sys.modules)}})
for argv in {commands!r}:
    sys.argv = ["mmbench", *argv]
    out, code = io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            mmbench.cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    report.append({{"command": " ".join(argv), "code": code, "out": len(out.getvalue()),
                   "heavy": sorted(m for m in heavy if m in sys.modules)}})
print(json.dumps(report))
"""


def test_light_commands_never_import_torch() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY, commands=COMMANDS)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["command"] for r in report] == ["import mmbench.cli", *(" ".join(c) for c in COMMANDS)]
    failed = [r for r in report if r["code"] != 0 or not r["out"]]
    assert not failed, f"these commands did not succeed (or printed nothing): {failed}"
    first = next((r for r in report if r["heavy"]), None)
    assert first is None, f"`mmbench {first['command']}` imported {first['heavy']}" if first else ""


def test_module_level_imports_are_acyclic() -> None:
    """No two modules of the package import each other at module level (directly or through others)."""
    import ast

    root = Path(__file__).parent.parent / "mmbench"
    mods = {}
    for p in root.rglob("*.py"):
        name = ".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        mods[name] = p
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.parse(p.read_text()).body:  # module level only: not TYPE_CHECKING, not functions
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                for t in (target, *(f"{target}.{a.name}" for a in node.names)):
                    if t in mods and t != m:
                        graph[m].add(t)
    state: dict[str, int] = {}

    def visit(u: str, path: list[str]) -> None:
        state[u] = 1
        for v in graph[u]:
            assert state.get(v) != 1, "import cycle: " + " -> ".join([*path[path.index(v):], v])
            if v not in state:
                visit(v, [*path, v])
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
