"""Plots and statistics from run records: numbers checked by hand on small fake records."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.config import SCHEMA_VERSION
from mmbench.errors import MMBenchError
from mmbench.protocols import MissingSpec
from mmbench.records import RunRecord, write_predictions, write_record
from mmbench.records import load_records as _load_set
from mmbench.report import power, stats
from mmbench.report.plots import plot_curves, plot_patterns, plot_seeds


def fake_record(root: Path, method: str, seed: int, value: float, *, scenario: str = "both",
                rate: float = 0.5, test_rate: float | None = None, dataset: str = "toy",
                by_pattern: dict[str, float] | None = None, ceiling: dict[str, float] | None = None,
                mask_hash: str | None = None,
                predictions: dict[str, np.ndarray] | None = None) -> RunRecord:
    """Write a minimal valid run record with test accuracy ``value`` (and optional predictions)."""
    spec = MissingSpec(scenario, rate, {}, test_rate)
    t_rate = rate if test_rate is None else test_rate
    run_id = f"{method}-{scenario}-{rate}-{t_rate}-{seed}".replace(".", "")
    name = f"{scenario}-r{rate}-t{t_rate}-s{seed}"
    rec = {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "status": "ok", "error": None,
        "labels": {"method": method, "dataset": dataset, "protocol": None, "scenario": scenario, "rate": rate,
                   "rates": {}, "test_rate": t_rate, "availability": spec.label("train"),
                   "test_availability": spec.label("test"), "seed": seed, "sim_seed": seed},
        "spec": {"method": {"name": method}, "dataset": {"name": dataset, "task": "multiclass"},
                 "missing": {"scenario": scenario, "rate": rate, "test_rate": test_rate}},
        "primary_metric": "accuracy",
        "metrics": {"test": {"accuracy": value},
                    "test_by_pattern": {p: {"accuracy": v} for p, v in (by_pattern or {}).items()}},
        "ceiling": ceiling,
        "masks": {"test": {"hash": mask_hash or f"m-{scenario}-{t_rate}-{seed}", "n": 1}},
        "files": {},
    }
    path = root / dataset / method / f"{name}.json"
    if predictions is not None:
        write_predictions(path.with_suffix(".npz"), predictions)
        rec["files"]["predictions"] = f"{name}.npz"
    record = RunRecord.model_validate(rec)
    write_record(path, record)
    return record


def load_records(root: Path) -> list[RunRecord]:
    """The usable records under ``root``."""
    return _load_set(root).records


# ---------------------------------------------------------------------------------------------- tests


def test_wilcoxon_exact_p_for_six_and_five_positive_differences() -> None:
    # six differences all > 0: the exact null puts 1/2^6 on W+ = 21 and 1/2^6 on W+ = 0 -> p = 2/64
    a = np.array([0.80, 0.81, 0.82, 0.83, 0.84, 0.85])
    b = a - np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    assert stats.wilcoxon_p(a, b)[1] == pytest.approx(2 / 2**6) == pytest.approx(0.03125)
    assert stats.wilcoxon_p(a[:5], b[:5])[1] == pytest.approx(2 / 2**5)  # 0.0625: never < 0.05
    assert stats.min_wilcoxon_p(5) == 0.0625 and stats.min_wilcoxon_p(6) == 0.03125
    assert stats.wilcoxon_p(a, a)[1] == 1.0  # all differences zero
    assert math.isnan(stats.wilcoxon_p(np.array([]), np.array([]))[1])


def test_holm_by_hand() -> None:
    # p = (0.01, 0.04, 0.03): sorted 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04
    # -> running max 0.03, 0.06, 0.06
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    out = stats.holm([0.5, math.nan, 0.6])  # NaN is left out (m = 2): 0.5*2 = 1.0; max(1.0, 0.6*1) = 1
    assert math.isnan(out[1]) and out[0] == 1.0 and out[2] == 1.0


def test_compare_to_best_daggers_with_six_and_five_seeds(tmp_path: Path) -> None:
    for s in range(6):
        fake_record(tmp_path, "good", s, 0.80 + 0.01 * s)
        fake_record(tmp_path, "bad", s, 0.70 + 0.005 * s)  # below "good" on every seed
        fake_record(tmp_path, "close", s, 0.80 + 0.01 * s + (0.001 if s % 2 else -0.003))  # mean 0.001 lower
    recs = load_records(tmp_path)
    comp = stats.compare_to_best(recs).set_index("method")
    assert comp.at["good", "best"] and not comp.at["good", "tie"]
    assert comp.at["bad", "p"] == pytest.approx(0.03125)  # six positive differences: 2/2^6
    # good - close = (+.003, -.001) x 3: |d| ranks 4,5,6 positive and 1,2,3 negative -> W- = 6;
    # 14 of the 64 sign patterns have W <= 6, so the exact two-sided p is 28/64 (ties: normal approx. near it)
    assert comp.at["close", "p"] > 0.3 and comp.at["close", "tie"]
    # Holm over the row's two comparisons: bad's 0.03125 is the smallest, times 2 -> 0.0625 >= 0.05: a dagger
    assert comp.at["bad", "p_holm"] == pytest.approx(0.0625) and comp.at["bad", "tie"]
    five = stats.compare_to_best([r for r in recs if r.labels.seed < 5]).set_index("method")
    assert five.at["bad", "p"] == pytest.approx(0.0625) and five.at["bad", "tie"]


def test_compare_to_best_single_comparison_significant(tmp_path: Path) -> None:
    for s in range(6):
        fake_record(tmp_path, "late_fusion", s, 0.70)
        fake_record(tmp_path, "dfpl", s, 0.75 + 0.01 * s)
    comp = stats.compare_to_best(load_records(tmp_path)).set_index("method")
    assert comp.at["dfpl", "best"] and comp.at["late_fusion", "p_holm"] == pytest.approx(0.03125)
    assert not comp.at["late_fusion", "tie"]
    text, _ = stats.render_with_stats(load_records(tmp_path), "md")
    assert "†" in text.split("\n\n")[0] and "†" not in text.split("\n\n")[1]  # legend only, no marked cell


def test_pairing_refuses_different_masks(tmp_path: Path) -> None:
    fake_record(tmp_path, "a", 0, 0.8, mask_hash="aaaa")
    fake_record(tmp_path, "b", 0, 0.7, mask_hash="bbbb")
    with pytest.raises(MMBenchError, match="different missingness masks.*a: aaaa, b: bbbb"):
        stats.compare_to_best(load_records(tmp_path))


def test_table_with_daggers_md_and_csv(tmp_path: Path) -> None:
    for s in range(3):  # 3 seeds: no Wilcoxon p can be < 0.05, so every non-best method is marked
        fake_record(tmp_path, "late_fusion", s, 0.60 + 0.01 * s)
        fake_record(tmp_path, "dfpl", s, 0.70 + 0.01 * s)
    recs = load_records(tmp_path)
    text, comp = stats.render_with_stats(recs, "md")
    assert "61.00 ± 1.00†" in text and "**71.00 ± 1.00**" in text
    csv, _ = stats.render_with_stats(recs, "csv")
    header, *rows = csv.strip().splitlines()
    assert header.endswith("p_vs_best,p_holm,not_sig_vs_best,mdd,below_mdd,seeds_needed")
    lf = next(r for r in rows if ",late_fusion," in r)
    # 3 positive differences: 2/2^3; the differences are all exactly 0.10 (sd 0): MDD 0, so detectable
    assert lf.endswith("0.250000,0.250000,True,0.000000,False,2")


def test_methods_below_the_minimum_detectable_difference_are_marked_tied(tmp_path: Path) -> None:
    # per-seed differences best - other: 0.02, -0.01, 0.02, 0.01, -0.005, 0.015 (mean 0.00833, sd 0.0121)
    best = [0.80, 0.81, 0.82, 0.83, 0.84, 0.85]
    other = [0.78, 0.82, 0.80, 0.82, 0.845, 0.835]
    for s, (a, b) in enumerate(zip(best, other, strict=True)):
        fake_record(tmp_path, "best", s, a)
        fake_record(tmp_path, "other", s, b)
        fake_record(tmp_path, "far", s, a - 0.10 - 0.001 * s)  # 10 points below: far beyond any MDD
    comp = stats.compare_to_best(load_records(tmp_path), test="ttest").set_index("method")
    d = np.array(best) - np.array(other)
    sd = d.std(ddof=1)
    assert comp.loc["other", "sd_diff"] == pytest.approx(sd)
    assert comp.loc["other", "mdd"] == pytest.approx(power.mdd(sd, 6))
    assert comp.loc["other", "gap"] == pytest.approx(d.mean()) and comp.loc["other", "below_mdd"]
    assert not comp.loc["far", "below_mdd"] and comp.loc["far", "p"] < 1e-6
    assert comp.loc["other", "p"] == pytest.approx(scipy_stats.ttest_rel(best, other).pvalue)
    text, _ = stats.render_with_stats(load_records(tmp_path), "md", test="ttest")
    cells = [c.strip() for c in next(line for line in text.splitlines() if line.startswith("| toy")).split("|")]
    other_cell = next(c for c in cells if c.startswith(f"{100 * np.mean(other):.2f}"))
    far_cell = next(c for c in cells if c.startswith(f"{100 * (np.mean(best) - 0.1025):.2f}"))
    assert other_cell.endswith("≈") and "≈" not in far_cell
    assert cells[-3:-1] == ["6", f"{100 * np.median([comp.loc['other', 'mdd'], comp.loc['far', 'mdd']]):.2f}"]


def test_power_figures_by_hand() -> None:
    # seeds a 2-point gap needs at 80 % power with paired SD 1/2/3/4 points (noncentral t, alpha 0.05)
    assert [power.seeds_needed(2, sd) for sd in (1, 2, 3, 4)] == [5, 10, 20, 34]
    # large n: the MDD tends to (z_0.975 + z_0.8) sd / sqrt(n) = (1.959964 + 0.841621) sd / sqrt(n)
    assert power.mdd(1.0, 10_000) == pytest.approx(2.801585 / 100, rel=2e-3)
    assert power.paired_t_power(power.mdd(1.3, 7), 1.3, 7) == pytest.approx(0.8, abs=1e-6)
    assert power.mdd(0.0, 5) == 0.0 and math.isnan(power.mdd(1.0, 1))
    # McNemar: 8 rows only A gets right, 2 only B: p = 2 P(X >= 8 | 10, 1/2) = 2 (45 + 10 + 1) / 1024
    a = np.array([1] * 8 + [0] * 2 + [1] * 5, dtype=bool)
    b = np.array([0] * 8 + [1] * 2 + [1] * 5, dtype=bool)
    assert power.mcnemar_p(a, b) == (8, 2, pytest.approx(112 / 1024))


def test_friedman_ranks_and_pairwise_by_hand(tmp_path: Path) -> None:
    # 4 blocks (scenario x rate), methods always ordered a > b > c; seeds averaged first
    for sc, rate in (("image", 0.3), ("image", 0.7), ("tabular", 0.3), ("both", 0.5)):
        for s in range(2):
            fake_record(tmp_path, "a", s, 0.9 - 0.1 * rate + 0.01 * s, scenario=sc, rate=rate)
            fake_record(tmp_path, "b", s, 0.8 - 0.1 * rate, scenario=sc, rate=rate)
            fake_record(tmp_path, "c", s, 0.5, scenario=sc, rate=rate)
    res = stats.friedman_summary(load_records(tmp_path))
    assert (res.n_blocks, res.n_methods, res.dropped_blocks) == (4, 3, 0)
    assert list(res.ranks["method"]) == ["a", "b", "c"] and list(res.ranks["avg_rank"]) == [1.0, 2.0, 3.0]
    # chi2_F = 12N/(k(k+1)) * sum R_j^2 - 3N(k+1) = 12*4/12 * (1+4+9) - 3*4*4 = 56 - 48 = 8; p = exp(-8/2)
    assert res.statistic == pytest.approx(8.0) and res.p == pytest.approx(math.exp(-4))
    # pairwise over 4 blocks, all one sign: p = 2/2^4 = 0.125; Holm with 3 tests: 0.375, 0.375, 0.375
    np.testing.assert_allclose(res.pairwise["p"], [0.125] * 3)
    np.testing.assert_allclose(res.pairwise["p_holm"], [0.375] * 3)
    assert not res.pairwise["significant"].any()


def test_auc_trapezoid_on_three_points(tmp_path: Path) -> None:
    # test sweep at 0.1, 0.5, 0.9 with accuracy 0.8, 0.6, 0.4 (seed 0) and 0.9, 0.7, 0.5 (seed 1)
    # area seed 0 = 0.4*(0.8+0.6)/2 + 0.4*(0.6+0.4)/2 = 0.28 + 0.20 = 0.48, / range 0.8 = 0.60
    # area seed 1 = 0.4*(0.9+0.7)/2 + 0.4*(0.7+0.5)/2 = 0.32 + 0.24 = 0.56, / 0.8 = 0.70
    for s, vals in ((0, (0.8, 0.6, 0.4)), (1, (0.9, 0.7, 0.5))):
        for tr, v in zip((0.1, 0.5, 0.9), vals, strict=True):
            fake_record(tmp_path, "m", s, v, test_rate=tr)
    recs = load_records(tmp_path)
    auc = stats.auc_summary(recs).iloc[0]
    assert auc["axis"] == "test_rate" and auc["n_points"] == 3 and auc["n"] == 2
    assert auc["auc"] == pytest.approx(0.65) and auc["std"] == pytest.approx(math.sqrt(0.005))
    raw = stats.auc_summary(recs, normalize=False).iloc[0]
    assert raw["auc"] == pytest.approx((0.48 + 0.56) / 2)


def test_drop_from_complete_and_from_rate0(tmp_path: Path) -> None:
    # seed 0: overall 0.70, complete rows 0.80 -> delta -0.10; seed 1: 0.60 vs 0.90 -> -0.30
    fake_record(tmp_path, "m", 0, 0.70, by_pattern={"complete": 0.80})
    fake_record(tmp_path, "m", 1, 0.60, by_pattern={"complete": 0.90})
    fake_record(tmp_path, "m", 0, 0.85, scenario="none", rate=0.0)
    fake_record(tmp_path, "m", 1, 0.95, scenario="none", rate=0.0)
    recs = load_records(tmp_path)
    d = stats.drop_summary(recs, reference="complete")
    row = d[d["scenario"] == "both"].iloc[0]
    # mean delta (-0.10 - 0.30)/2 = -0.20; std of (-0.1, -0.3) with ddof 1 = sqrt(0.02)
    assert row["delta"] == pytest.approx(-0.20) and row["std"] == pytest.approx(math.sqrt(0.02))
    r0 = stats.drop_summary(recs, reference="rate0")
    assert list(r0["scenario"]) == ["both"]
    assert r0.iloc[0]["delta"] == pytest.approx(((0.70 - 0.85) + (0.60 - 0.95)) / 2)  # -0.25


def test_paired_bootstrap_from_prediction_files(tmp_path: Path) -> None:
    n = 40
    y = np.arange(n) % 4
    right = np.eye(4)[y] * 5.0
    wrong = np.eye(4)[(y + 1) % 4] * 5.0
    present = np.ones((n, 2), dtype=bool)
    idx = np.arange(n)
    good = {"logits": right, "y": y, "present": present, "index": idx}
    rev = idx[::-1].copy()  # rows stored in another order are aligned by index
    bad = {"logits": wrong[rev], "y": y[rev], "present": present, "index": rev}
    for s in range(2):
        fake_record(tmp_path, "good", s, 1.0, predictions=good)
        fake_record(tmp_path, "bad", s, 0.0, predictions=bad)
        fake_record(tmp_path, "twin", s, 1.0, predictions=good)
    recs = load_records(tmp_path)
    preds = stats.prediction_paths(tmp_path)
    assert len(preds) == 6
    comp = stats.compare_to_best(recs, test="bootstrap", predictions=preds, n_boot=199).set_index("method")
    # "bad" is wrong on every row: every replicate difference is 1 > 0 -> p = 2*(0+1)/(199+1) = 0.01
    assert comp.at["bad", "p"] == pytest.approx(0.01) and not comp.at["bad", "tie"]
    # identical predictions: every replicate difference is 0 -> p = min(1, 2*(199+1)/200) = 1
    assert comp.at["twin", "p"] == 1.0 or comp.at["good", "p"] == 1.0
    # generic metric path (macro F1 through compute_metrics) agrees on the perfect separation
    a = {"logits": right, "y": y, "present": present, "index": idx}
    b = {"logits": wrong, "y": y, "present": present, "index": idx}
    obs, p = stats.paired_bootstrap_p([(a, b)], "macro_f1", "multiclass", n_boot=19)
    assert obs == pytest.approx(1.0) and p == pytest.approx(0.1)


def _grid_records(root: Path) -> None:
    ceiling = {"complete": 0.9, "image_only": 0.5, "tabular_only": 0.6}
    by = {"complete": 0.05, "image_only": -0.3, "tabular_only": -0.2}  # offsets from the method's base
    for m, base in (("late_fusion", 0.7), ("dfpl", 0.75)):
        for s in range(3):
            for sc in ("image", "both"):
                for rate in (0.3, 0.7):
                    fake_record(root, m, s, base - 0.2 * rate + 0.01 * s, scenario=sc, rate=rate,
                                ceiling=ceiling, by_pattern={p: base + v for p, v in by.items()})
            fake_record(root, m, s, base + 0.05, scenario="none", rate=0.0, ceiling=ceiling,
                        by_pattern={"complete": base + 0.05})


def test_plots_write_png_and_pdf(tmp_path: Path) -> None:
    _grid_records(tmp_path / "res")
    recs = load_records(tmp_path / "res")
    pts, axis = stats.curve_points(recs)
    assert axis == "rate" and set(pts["group"]) == {"toy · image", "toy · both"}
    assert set(pts.loc[pts["group"] == "toy · image", "x"]) == {0.0, 0.3, 0.7}  # scenario none joins at 0
    image = [r for r in recs if r.labels.scenario == "image"]  # 2 panels keep the test quick
    for fn, name, rs in ((plot_curves, "curve.png", recs), (plot_patterns, "patterns", image),
                         (plot_seeds, "seeds.pdf", image)):
        paths = fn(rs, tmp_path / "plots" / name)
        assert [p.suffix for p in paths] == [".png", ".pdf"]
        assert all(p.is_file() and p.stat().st_size > 1000 for p in paths)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "curve.pdf", "curve.png", "patterns.pdf", "patterns.png", "seeds.pdf", "seeds.png"]  # no temp files


def test_cli_plot_stats_and_table_stats(tmp_path: Path) -> None:
    res = tmp_path / "res"
    _grid_records(res)
    runner = CliRunner()
    out = runner.invoke(app, ["plot", "--results", str(res), "--kind", "curve",
                              "--out", str(tmp_path / "c.png")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "c.png").stat().st_size > 0 and (tmp_path / "c.pdf").stat().st_size > 0
    out = runner.invoke(app, ["stats", "--results", str(res), "--csv-dir", str(tmp_path / "csv")])
    assert out.exit_code == 0, out.output
    assert "Average rank" in out.output and "Friedman" in out.output
    assert {p.name for p in (tmp_path / "csv").iterdir()} >= {"ranks.csv", "pairwise.csv", "vs_best.csv",
                                                              "auc.csv", "drop.csv"}
    out = runner.invoke(app, ["table", "--results", str(res), "--stats"])
    assert out.exit_code == 0, out.output
    assert "†" in out.output and "cannot reach p < 0.05" in out.output


def test_pairing_refuses_two_runs_of_one_method(tmp_path: Path) -> None:
    rec = fake_record(tmp_path, "a", 0, 0.8)
    fake_record(tmp_path, "b", 0, 0.7)
    rec = rec.model_copy(update={"run_id": "other-run"})  # the same experiment and seed twice: ambiguous
    write_record(tmp_path / "toy" / "a" / "copy.json", rec)
    with pytest.raises(MMBenchError, match="several runs of method 'a'"):
        stats.friedman_summary(load_records(tmp_path))
