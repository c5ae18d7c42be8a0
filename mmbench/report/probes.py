"""What the embeddings encode: the ground-truth probe table (``mmbench table --view probes``).

One row per dataset x missingness cell x method x feature group (``image.shared``, ``image.specific``,
``tabular``, ...), one column per true latent factor, each cell the cross-validated linear-probe R² of
that factor from that group (:mod:`mmbench.probes`), mean ± std over seeds. A method that separates
shared from modality-specific information shows the shared factor high from its shared branches and
low from its specific ones, and the reverse for each modality's own factor.
"""

from __future__ import annotations

import pandas as pd

from ..errors import MMBenchError
from ..records import RunRecord
from .tables import _method_order, latex_escape, latex_table

KEYS = ["dataset", "availability", "method", "group"]


def probe_frame(records: list[RunRecord]) -> pd.DataFrame:
    """One row per record x feature group x latent: the R²."""
    from .frame import records_frame

    labels = records_frame(records)["method"].tolist()  # disambiguated labels (settings that differ)
    rows = []
    for r, label in zip(records, labels, strict=True):
        for group, by_latent in (r.probes or {}).items():
            for latent, r2 in by_latent.items():
                rows.append({"dataset": r.labels.dataset, "availability": r.labels.availability, "method": label,
                             "group": group, "latent": latent, "seed": r.labels.seed, "r2": r2})
    if not rows:
        raise MMBenchError("no run records with probes (they need a dataset that knows its latent factors, "
                           "such as the synthetic suite)")
    return pd.DataFrame(rows)


def render_probes(records: list[RunRecord], fmt: str = "md") -> str:
    """The probe table in ``fmt`` (md, csv, latex, html)."""
    df = probe_frame([r for r in records if r.ok])
    agg = (df.groupby([*KEYS, "latent"], dropna=False)["r2"]
             .agg(mean="mean", std=lambda s: float(s.std(ddof=1)) if s.count() > 1 else 0.0, n="count")
             .reset_index())
    if fmt == "csv":
        return agg.to_csv(index=False, float_format="%.6f")
    order = {m: i for i, m in enumerate(_method_order(sorted(agg["method"].unique())))}
    agg["order"] = agg["method"].map(order)
    agg["text"] = [f"{m:.2f} ± {s:.2f}" if n > 1 else f"{m:.2f}" for m, s, n in zip(agg["mean"], agg["std"],
                                                                                     agg["n"], strict=True)]
    if fmt not in ("md", "latex", "html"):
        raise MMBenchError(f"unknown table format {fmt!r}; expected md, csv, latex or html")
    caption = ("Cross-validated linear-probe R² of each true latent factor (columns) from each feature group "
               "of each method (rows), on test rows with the group's modality; mean ± std over seeds.")
    parts = []
    # one table per dataset: each task has its own latents, so a shared column set would be mostly empty
    for dataset, sub in agg.groupby("dataset", sort=True):
        table = (sub.sort_values(["availability", "order", "group"])
                    .pivot_table(index=[*KEYS], columns="latent", values="text", aggfunc="first", sort=False)
                    .reset_index())
        table.columns.name = None
        table = table.fillna("–")
        if fmt == "md":
            parts.append(table.to_markdown(index=False, disable_numparse=True))
        elif fmt == "latex":
            parts.append(latex_table(table.map(latex_escape), f"{caption} {dataset}.",
                                     label=f"tab:probes-{dataset}", text_columns=tuple(KEYS)))
        else:
            parts.append(table.to_html(index=False))
    if fmt == "md":
        return caption + "\n\n" + "\n\n".join(parts) + "\n"
    if fmt == "latex":
        return "\n".join(parts)
    return f"<p>{caption}</p>\n" + "\n".join(parts)
