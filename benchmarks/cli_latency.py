"""Wall time of the light ``mmbench`` commands relative to ``python -c "import pandas"``, in one run.

Each command runs in a fresh interpreter (a subprocess, as a user types it) on the committed record
fixtures; the baseline is the cost of importing pandas, which ``table`` and ``stats`` need anyway.
Commands are timed round-robin in a shuffled order, so a busy shared machine slows every command
alike; the ratio is taken within each round and the table gives its median (and interquartile range)
next to the median wall time. The goal is a ratio of at most 1.5 for every command.

    python benchmarks/cli_latency.py                    # 7 rounds, ``python -m mmbench``
    python benchmarks/cli_latency.py --rounds 15 --console-script --check
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "tests" / "fixtures" / "historic_results" / "v1-8f2379f"
REFERENCE = ROOT / "tests" / "fixtures" / "golden" / "v1-8f2379f.csv"
BASELINE = "import pandas"


def commands(records: Path, reference: Path) -> dict[str, list[str]]:
    """Name -> argv after ``mmbench`` (``None`` argv = ``python -c "import mmbench.cli"``)."""
    return {
        "import mmbench.cli": [],
        "--help": ["--help"],
        "table": ["table", "-r", str(records)],
        "check": ["check", "-r", str(records), "--reference", str(reference)],
        "stats": ["stats", "-r", str(records)],
        "validate": ["validate"],
        "ls protocols": ["ls", "protocols"],
        "ls methods": ["ls", "methods"],
    }


def timed(argv: list[str]) -> float:
    """Seconds one subprocess takes; a failing command stops the benchmark with its stderr."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return seconds


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds (each runs every command once)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (file-system caches)")
    ap.add_argument("--console-script", action="store_true",
                    help="run the installed `mmbench` script instead of `python -m mmbench`")
    ap.add_argument("--records", type=Path, default=RECORDS)
    ap.add_argument("--reference", type=Path, default=REFERENCE)
    ap.add_argument("--goal", type=float, default=1.5)
    ap.add_argument("--check", action="store_true", help="exit 1 if a median ratio exceeds --goal")
    args = ap.parse_args()

    if args.console_script:
        script = shutil.which("mmbench") or str(Path(sys.executable).parent / "mmbench")
        prefix = [script]
    else:
        prefix = [sys.executable, "-m", "mmbench"]
    argvs = {name: ([sys.executable, "-c", "import mmbench.cli"] if not rest else [*prefix, *rest])
             for name, rest in commands(args.records, args.reference).items()}
    argvs["baseline"] = [sys.executable, "-c", BASELINE]

    times: dict[str, list[float]] = {name: [] for name in argvs}
    ratios: dict[str, list[float]] = {name: [] for name in argvs if name != "baseline"}
    rng = random.Random(0)
    for r in range(args.warmup + args.rounds):
        order = list(argvs)
        rng.shuffle(order)
        this = {name: timed(argvs[name]) for name in order}
        if r < args.warmup:
            continue
        for name, s in this.items():
            times[name].append(s)
            if name != "baseline":
                ratios[name].append(s / this["baseline"])

    base = statistics.median(times["baseline"])
    print(f"baseline `python -c \"{BASELINE}\"`: median {base:.3f} s over {args.rounds} rounds "
          f"({'console script' if args.console_script else 'python -m mmbench'}; goal <= {args.goal}x)\n")
    print("| command | median s | ratio to pandas (median) | ratio IQR |")
    print("|---|---|---|---|")
    worst = 0.0
    for name, vals in ratios.items():
        med = statistics.median(vals)
        lo, hi = quartiles(vals)
        worst = max(worst, med)
        flag = "" if med <= args.goal else " **over goal**"
        print(f"| {name} | {statistics.median(times[name]):.3f} | {med:.2f}{flag} | {lo:.2f}-{hi:.2f} |")
    return 1 if args.check and worst > args.goal else 0


if __name__ == "__main__":
    sys.exit(main())
