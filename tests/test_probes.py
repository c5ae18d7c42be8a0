"""Ground-truth probes: the R² of a latent factor from features that carry it, and from features that do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmbench.probes import linear_probe_r2, probe


def test_a_linear_code_of_the_factor_is_read_and_noise_is_not() -> None:
    rng = np.random.default_rng(0)
    n = 800
    z = rng.standard_normal(n)
    carries = np.column_stack([2.0 * z + 0.1 * rng.standard_normal(n), rng.standard_normal((n, 7))])
    noise = rng.standard_normal((n, 8))
    assert linear_probe_r2(carries, z) == pytest.approx(1.0, abs=0.01)  # R² = var(2z) / var(2z + e)
    assert linear_probe_r2(noise, z) < 0.02  # cross-validated: no in-sample optimism


def test_a_discrete_factor_is_probed_through_its_indicators() -> None:
    rng = np.random.default_rng(1)
    k = rng.integers(0, 4, 1000)
    onehot = np.eye(4)[k] + 0.05 * rng.standard_normal((1000, 4))
    assert linear_probe_r2(onehot, k) > 0.95
    assert linear_probe_r2(rng.standard_normal((1000, 4)), k) < 0.02
    assert linear_probe_r2(onehot, np.zeros(1000, dtype=int)) is None  # a constant factor has no R²


def test_groups_are_probed_on_the_rows_that_have_their_modality() -> None:
    rng = np.random.default_rng(2)
    n = 600
    z = rng.standard_normal(n)
    present = np.ones((n, 2), dtype=bool)
    present[:300, 0] = False  # the image is absent on the first 300 rows: its features are zero there
    image = np.where(present[:, :1], z[:, None], 0.0) + 0.05 * rng.standard_normal((n, 1))
    out = probe({"image.shared": image, "tabular": rng.standard_normal((n, 3))}, present, np.arange(n), {"z": z})
    assert out["image.shared"]["z"] > 0.99  # on the image rows only; with the zero rows it would be ~0.5
    assert out["tabular"]["z"] < 0.03


def test_probe_view_tables_the_records_probes(tmp_path) -> None:
    """``mmbench table --view probes``: mean ± std over seeds of each group's R² per latent, every format."""
    import json

    from mmbench.records import parse_record
    from mmbench.report.probes import probe_frame, render_probes

    base = json.loads(next((Path(__file__).parent / "fixtures" / "historic_results" / "v1-early").glob("*.json"))
                      .read_text())
    recs = []
    for seed, r2 in ((0, 0.5), (1, 0.7)):
        data = json.loads(json.dumps(base))
        data["labels"]["seed"] = data["spec"]["train_seed"] = data["spec"]["sim_seed"] = seed
        data["run_id"] = f"r{seed}"
        data["probes"] = {"image.shared": {"z_s": r2, "z_i": 0.1}, "image.specific": {"z_s": 0.2, "z_i": r2}}
        recs.append(parse_record(data, "test"))
    assert len(probe_frame(recs)) == 8
    md = render_probes(recs, "md")
    row = next(line for line in md.splitlines() if "image.shared" in line)
    assert "0.60 ± 0.14" in row  # mean of 0.5 and 0.7, sample std 0.1414
    csv = render_probes(recs, "csv")
    assert csv.splitlines()[0] == "dataset,availability,method,group,latent,mean,std,n"
    assert "\\pm" in render_probes(recs, "latex") and "late\\_fusion" in render_probes(recs, "latex")
