"""The synthetic-suite comparison from run records only: the tables behind docs/synthetic-suite.md.

    python scripts/suite_summary.py results            # a folder holding `--protocol synthetic-suite` runs

Prints, as markdown:

1. accuracy (%) mean ± std over seeds per task and method, the row's best in bold, ``†`` where the
   paired t-test (by seed, Holm within the row) cannot tell a method from the best, ``≈`` where the gap
   is below the minimum detectable difference, and the row's median MDD;
2. regret (points) mean ± std, and per missing pattern;
3. every method paired against late fusion: mean gap, SD of the per-seed differences (paired) and the
   SD an unpaired comparison would face, p, MDD and the seeds a 1 / 2-point gap needs.

Reading records never imports torch; the statistics are those of ``mmbench table --stats``
(``mmbench.report.power``, ``mmbench.report.stats``).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from mmbench.records import load_records
from mmbench.report import power
from mmbench.report.frame import records_frame
from mmbench.report.stats import compare_to_best

ORDER = ["late_fusion", "drfuse", "shaspec", "ifmmin", "dmrnet", "dfpl", "late_fusion+dpl", "late_fusion+mce"]
TASKS = ["suite-sanity", "suite-parts", "suite-predict", "suite-imbalance", "suite-reliance",
         "suite-interaction", "suite-shared"]
PATTERNS = ("complete", "image_only", "tabular_only")


def _mean_std(df: pd.DataFrame, task: str, method: str) -> str:
    v = df[(df.dataset == task) & (df.method == method)]["value"].dropna().to_numpy(dtype=float)
    return f"{100 * v.mean():.1f} ± {100 * v.std(ddof=1):.1f}" if len(v) > 1 else "–"


def accuracy_table(records: list, acc: pd.DataFrame, methods: list[str]) -> str:
    """Accuracy with the best in bold, † not significant, ≈ below the MDD; the row's median MDD."""
    comp = compare_to_best(records, test="ttest").set_index(["dataset", "method"])
    lines = ["| task | seeds | " + " | ".join(methods) + " | MDD (pp) |", "|---|---|" + "---|" * len(methods) + "---|"]
    for task in TASKS:
        if task not in comp.index.get_level_values(0):
            continue
        cells, mdds = [], []
        for m in methods:
            if (task, m) not in comp.index:
                cells.append("–")
                continue
            c = comp.loc[(task, m)]
            text = _mean_std(acc, task, m)
            if c["best"]:
                cells.append(f"**{text}**")
                continue
            cells.append(text + ("†" if c["tie"] else "") + ("≈" if c["below_mdd"] else ""))
            if np.isfinite(c["mdd"]):
                mdds.append(100 * c["mdd"])
        n = int(comp.loc[task]["n"].max())
        mdd = f"{np.median(mdds):.2f}" if mdds else "–"
        lines.append(f"| {task} | {n} | " + " | ".join(cells) + f" | {mdd} |")
    return "\n".join(lines)


def regret_tables(reg: pd.DataFrame, methods: list[str]) -> str:
    """Regret mean ± std overall, then the mean per pattern (complete / image-only / tabular-only)."""
    head = "| task | " + " | ".join(methods) + " |\n|---|" + "---|" * len(methods)
    overall, by_pattern = [head], [head]
    for task in TASKS:
        if reg[reg.dataset == task].empty:
            continue
        overall.append(f"| {task} | " + " | ".join(_mean_std(reg, task, m) for m in methods) + " |")
        row = []
        for m in methods:
            sub = reg[(reg.dataset == task) & (reg.method == m)]
            row.append("–" if sub.empty else " / ".join(
                f"{100 * sub[f'regret_{p}'].astype(float).mean():.1f}" for p in PATTERNS))
        by_pattern.append(f"| {task} | " + " | ".join(row) + " |")
    return ("Regret (points), mean ± std over seeds:\n\n" + "\n".join(overall)
            + "\n\nRegret per pattern (points), mean over seeds, complete / image-only / tabular-only:\n\n"
            + "\n".join(by_pattern))


def paired_spread(acc: pd.DataFrame, methods: list[str], baseline: str = "late_fusion") -> pd.DataFrame:
    """Every method against the baseline, paired by seed within a task."""
    rows = []
    for task in TASKS:
        base = acc[(acc.dataset == task) & (acc.method == baseline)].set_index("seed")["value"].astype(float)
        for m in methods:
            if m == baseline:
                continue
            other = acc[(acc.dataset == task) & (acc.method == m)].set_index("seed")["value"].astype(float)
            d = (other - base).dropna()
            if len(d) < 2:
                continue
            sd = float(d.std(ddof=1))
            rows.append({"task": task, "method": m, "gap (pp)": 100 * d.mean(), "SD paired": 100 * sd,
                         "SD unpaired": 100 * float(np.sqrt(other.var(ddof=1) + base.var(ddof=1))),
                         "p": power.paired_t_p(other.loc[d.index].to_numpy(), base.loc[d.index].to_numpy()),
                         "MDD (pp)": 100 * power.mdd(sd, len(d)), "seeds for 1 pp": power.seeds_needed(0.01, sd),
                         "seeds for 2 pp": power.seeds_needed(0.02, sd)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="results")
    args = parser.parse_args()
    records = [r for r in load_records(args.results).records if r.labels.dataset in TASKS]
    methods = [m for m in ORDER if any(r.labels.method == m for r in records)]
    records = [r for r in records if r.labels.method in methods]
    acc = records_frame(records)
    print("Test accuracy (%), mean ± std over seeds:\n")
    print(accuracy_table(records, acc, methods))
    print()
    print(regret_tables(records_frame(records, "regret"), methods))
    spread = paired_spread(acc, methods)
    if spread.empty:
        return
    print("\nPaired against late_fusion:\n")
    print(spread.to_markdown(index=False, floatfmt=".2f"))
    q1, q3 = spread["SD paired"].quantile([0.25, 0.75])
    print(f"\n{len(spread)} pairs: SD of the paired differences median {spread['SD paired'].median():.2f} pp "
          f"(IQR {q1:.2f}-{q3:.2f}), unpaired {spread['SD unpaired'].median():.2f} pp; "
          f"MDD at the seeds run median {spread['MDD (pp)'].median():.2f} pp; seeds for a 1 pp gap: median "
          f"{spread['seeds for 1 pp'].median():.0f}, for 2 pp: {spread['seeds for 2 pp'].median():.0f}")


if __name__ == "__main__":
    main()
