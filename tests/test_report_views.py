"""Report views on fixed records: golden md / csv / LaTeX tables, lower-is-better metrics, the cost view,
every figure (size checked), the HTML page, and - slow-marked - the LaTeX compiled by pdflatex and the
page opened in headless Chromium.

The records under ``tests/fixtures/report_results`` were made by
``mmbench run --protocol report-fixture --config-dir tests/fixtures/report_config`` (synthetic-tiny,
late_fusion / late_fusion+dpl / dfpl, train x test rates 0.2 / 0.5 / 0.8, seeds 0-1); see the README there.
Set ``MMBENCH_UPDATE_GOLDEN=1`` to rewrite the golden files after an intended change.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmbench.errors import MMBenchError
from mmbench.records import RunRecord, load_records, parse_record
from mmbench.report import plots, stats
from mmbench.report.costs import cost_summary, render_costs
from mmbench.report.page import build_report
from mmbench.report.tables import latex_escape, render, summarize

HERE = Path(__file__).parent
RESULTS = HERE / "fixtures" / "report_results"
GOLDEN = HERE / "fixtures" / "golden"


@pytest.fixture(scope="module")
def records() -> list[RunRecord]:
    return load_records(RESULTS).records


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("MMBENCH_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from its golden file (MMBENCH_UPDATE_GOLDEN=1 rewrites it)"


# ------------------------------------------------------------------------------------------- tables
GOLDEN_TABLES = [(metric, fmt) for metric in ("accuracy", "ece", "brier") for fmt in ("md", "csv", "latex")]


@pytest.mark.parametrize(("metric", "fmt"), GOLDEN_TABLES)
def test_tables_match_golden_files(records: list[RunRecord], metric: str, fmt: str) -> None:
    _golden(f"report-{metric}.{fmt}", render(records, fmt, None if metric == "accuracy" else metric))


@pytest.mark.parametrize("fmt", ["md", "csv", "latex"])
def test_stats_and_cost_tables_match_golden_files(records: list[RunRecord], fmt: str) -> None:
    text, _ = stats.render_with_stats(records, fmt, test="ttest")
    _golden(f"report-accuracy-stats.{fmt}", text)
    _golden(f"report-costs.{fmt}", render_costs(records, fmt))


def test_latex_is_escaped_ascii_with_booktabs_bold_and_underline(records: list[RunRecord]) -> None:
    text = render(records, "latex")
    assert text.isascii(), "raw unicode (±, –, ≈) does not compile with pdflatex's defaults"
    assert "\\toprule" in text and "\\midrule" in text and "\\bottomrule" in text and "$\\pm$" in text
    assert "late\\_fusion" in text and "90\\%" in text and "late_fusion" not in text.replace("late\\_fusion", "")
    body = [line for line in text.splitlines() if line.startswith("synthetic-tiny")]
    assert len(body) == 9 and all(line.count("\\textbf{") >= 1 for line in body)
    assert all(line.count("\\underline{") >= 1 for line in body)  # three methods: a second best in every row
    stats_tex, _ = stats.render_with_stats(records, "latex", test="ttest")
    assert stats_tex.isascii() and "$^{\\dagger\\approx}$" in stats_tex and "$$" not in stats_tex
    assert latex_escape("a_b & 50% #1 {x} ~^\\ [y]") == \
        "a\\_b \\& 50\\% \\#1 \\{x\\} \\textasciitilde{}\\textasciicircum{}\\textbackslash{} {[}y{]}"


def test_best_is_the_lowest_for_ece_and_brier(records: list[RunRecord]) -> None:
    for metric in ("ece", "brier"):
        s = summarize(records, metric)
        row = s[(s["rate"] == "0.5") & (s["test_rate"] == "0.5")].set_index("method")["mean"]
        best = row.idxmin()
        comp = stats.compare_to_best(records, metric, test="ttest")
        cell = comp[(comp["rate"] == "0.5") & (comp["test_rate"] == "0.5")].set_index("method")
        assert cell.loc[best, "best"] and (cell["gap"] >= 0).all()  # gaps measured in the better direction
        md = render(records, "md", metric)
        line = next(ln for ln in md.splitlines() if "| synthetic-tiny | 75%" in ln and ln.count("75%") == 4)
        bold = [c.strip() for c in line.split("|") if c.strip().startswith("**")]
        scale = 100.0 if metric == "ece" else 1.0
        assert len(bold) == 1 and bold[0].startswith(f"**{row.min() * scale:.{2 if metric == 'ece' else 3}f}")
    brier = render(records, "md", "brier")
    assert "Brier score, lower is better" in brier and "best (lowest) per row" in brier
    assert "0.6" in brier and "60." not in brier  # the raw score, not "percent" of a 0-2 range


def test_ranks_follow_the_metric_direction(records: list[RunRecord]) -> None:
    acc = stats.friedman_summary(records, "accuracy").ranks.set_index("method")["avg_rank"]
    ece = stats.friedman_summary(records, "ece")
    mat = ece.blocks
    by_hand = mat.rank(axis=1, ascending=True).mean(axis=0)  # rank 1 = the lowest ECE
    assert ece.ranks.set_index("method")["avg_rank"].to_dict() == pytest.approx(by_hand.to_dict())
    assert acc.idxmin() == "late_fusion" and ece.ranks["method"].iloc[-1] == "late_fusion+dpl"


def test_cost_view(records: list[RunRecord]) -> None:
    s = cost_summary(records).set_index("method")
    lf = [r for r in records if r.labels.method == "late_fusion"]
    assert s.loc["late_fusion", "parameters"] == lf[0].timing.parameters
    assert s.loc["late_fusion", "step_ms"] == pytest.approx(np.mean([r.timing.step_ms for r in lf]))
    assert s.loc["late_fusion", "peak_memory_mb"] == max(r.timing.peak_memory_mb for r in lf)
    cells = {}
    for r in lf:
        cells.setdefault((r.labels.rate, r.labels.test_rate), []).append(r.metrics.test["ece"])
    assert s.loc["late_fusion", "ece"] == pytest.approx(np.mean([np.mean(v) for v in cells.values()]))
    assert s.loc["dfpl", "parameters"] > s.loc["late_fusion", "parameters"]


def test_cli_table_views(tmp_path: Path, monkeypatch, capsys) -> None:
    from tests.test_cli import cli

    code, out, _ = cli(["table", "-r", str(RESULTS), "--metric", "ece"], monkeypatch, capsys)
    assert code == 0 and "ece (%, lower is better)" in out
    code, out, _ = cli(["table", "-r", str(RESULTS), "--view", "costs", "-f", "csv"], monkeypatch, capsys)
    assert code == 0 and out.splitlines()[0].startswith("dataset,method,runs,cells,accuracy,ece,brier,parameters")
    code, _, err = cli(["table", "-r", str(RESULTS), "--view", "costs", "--stats"], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "--stats is for --view cells" in err


# ------------------------------------------------------------------------------------------ figures
def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def check_figure(paths: list[Path], size: tuple[int, int]) -> None:
    """A PNG of ``size`` pixels (150 dpi) and a PDF of the same page size in points (72 per inch)."""
    png = next(p for p in paths if p.suffix == ".png")
    pdf = next(p for p in paths if p.suffix == ".pdf")
    assert png.stat().st_size > 5000 and png_size(png) == size
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 2000
    box = data.split(b"/MediaBox [", 1)[1].split(b"]", 1)[0].split()
    assert all(abs(float(v) / 72 * 150 - px) <= 1 for v, px in zip(box[2:], size, strict=True))  # same inches


def _cell(records: list[RunRecord], rate: float) -> list[RunRecord]:
    return [r for r in records if r.labels.rate == rate and r.labels.test_rate == rate]


# expected pixels = figure inches x 150 dpi (layout rules of mmbench.report.plots)
FIGURES = {
    "curve": (lambda recs, out: plots.plot_curves(recs, out), (1980, 495)),  # 3 panels of 4.4 x 3.3 in
    "patterns": (lambda recs, out: plots.plot_patterns(recs, out), (1957, 1485)),  # 9 cells, 3 x 3 of 4.35 x 3.3
    "calibration": (lambda recs, out: plots.plot_patterns(recs, out, "ece"), (1957, 1485)),
    "seeds": (lambda recs, out: plots.plot_seeds(recs, out), (1485, 1485)),  # 3 x 3 of 3.3 x 3.3 in
    "heatmap": (lambda recs, out: plots.plot_heatmap(recs, out), (1665, 510)),  # 3 methods, 3.7 x 3.4 in
    "attention": (lambda recs, out: plots.plot_attention(recs, out, stats.prediction_paths(RESULTS)),
                  (1620, 1452)),  # 3 DFPL cells x 3 patterns: 10.8 x (3 x (1.3 + 0.22 x 8 classes) + 0.5) in
    "tsne": (lambda recs, out: plots.plot_tsne(_cell(recs, 0.5), out, stats.prediction_paths(RESULTS)),
             (1620, 1410)),  # 3 methods x 3 patterns: 10.8 x 9.4 in
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_figure_renders_at_its_size(records: list[RunRecord], tmp_path: Path, name: str) -> None:
    draw, size = FIGURES[name]
    check_figure(draw(records, tmp_path / name), size)


def test_cd_diagram(records: list[RunRecord], tmp_path: Path) -> None:
    pytest.importorskip("scikit_posthocs")
    check_figure(plots.plot_cd(records, tmp_path / "cd"), (1050, 360))  # 7.0 x (1.5 + 0.3 x 3) in


def test_cd_diagram_without_the_extra_is_one_line(records: list[RunRecord], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "scikit_posthocs", None)  # import scikit_posthocs -> ImportError
    with pytest.raises(plots.MissingExtra, match=r"needs scikit-posthocs \(pip install 'mmbench\[report\]'\)"):
        plots.plot_cd(records, tmp_path / "cd")


def test_figures_say_why_they_cannot_be_drawn(tmp_path: Path) -> None:
    historic = load_records(HERE / "fixtures" / "historic_results" / "v1-8f2379f").records
    with pytest.raises(MMBenchError, match="several train and several test missing rates"):
        plots.plot_heatmap(historic, tmp_path / "h")
    with pytest.raises(MMBenchError, match="no run has saved CMA attention"):
        plots.plot_attention(historic, tmp_path / "a", {})
    with pytest.raises(MMBenchError, match="no run has saved embeddings"):
        plots.plot_tsne(historic, tmp_path / "t", {})


def test_attention_is_the_true_class_query_averaged_per_class() -> None:
    """For pattern p, class c: the mean over every run's class-c rows of pattern p of attention[row, c, :]."""
    rng = np.random.default_rng(0)
    runs = []
    for _ in range(2):
        runs.append({"aux_cma_attention": rng.dirichlet(np.ones(6), size=(8, 3)),
                     "y": np.array([0, 1, 2, 0, 1, 2, 0, 1]),
                     "present": np.array([[1, 1]] * 6 + [[1, 0]] * 2, dtype=bool)})
    mean, counts = plots.class_attention(runs, "complete")
    for c in range(3):
        rows = np.concatenate([r["aux_cma_attention"][:6][r["y"][:6] == c, c, :] for r in runs])
        np.testing.assert_allclose(mean[c], rows.mean(axis=0))
        assert counts[c] == len(rows) == 4
    image_only, n = plots.class_attention(runs, "image_only")  # rows 6 (class 0) and 7 (class 1) of each run
    np.testing.assert_allclose(image_only[0], np.mean([r["aux_cma_attention"][6, 0] for r in runs], axis=0))
    assert n.tolist() == [2, 2, 0] and np.isnan(image_only[2]).all()


def test_cma_row_labels_follow_dfpl_validity() -> None:
    """The labels of plots.CMA_ROWS match DFPL's H: image-only rows give zero weight to the two
    tabular-specific rows, tabular-only rows to the two image-specific rows."""
    import torch

    from mmbench.models.dfpl import DFPL
    from mmbench.models.params import DFPLConfig
    from tests.conftest import make_batch, tiny_ctx

    torch.manual_seed(0)
    model = DFPL(tiny_ctx(), DFPLConfig()).eval()
    with torch.no_grad():
        attn = model(make_batch(["image_only", "tabular_only", "complete"])).aux["cma_attention"]
    assert attn.shape[-1] == len(plots.CMA_ROWS)
    tab = [i for i, n in enumerate(plots.CMA_ROWS) if n.startswith("tabular spec.")]
    img = [i for i, n in enumerate(plots.CMA_ROWS) if n.startswith("image spec.")]
    assert torch.all(attn[0][:, tab] == 0) and torch.all(attn[0][:, img] > 0)
    assert torch.all(attn[1][:, img] == 0) and torch.all(attn[1][:, tab] > 0)
    assert torch.all(attn[2] > 0)


# ------------------------------------------------------------------------------------------- report
@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, records: list[RunRecord]):
    out = tmp_path_factory.mktemp("report")
    return build_report(records, RESULTS, out)


def test_report_page_is_self_contained(report) -> None:
    text = report.index.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<script" not in text.lower()
    assert "http://" not in text and "https://" not in text  # nothing to fetch
    srcs = [part.split('"', 1)[0] for part in text.split('src="')[1:]]
    assert len(srcs) >= 7 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for name in ("curve", "heatmap", "patterns", "calibration", "seeds", "attention", "tsne"):
        assert (report.index.parent / "figures" / f"{name}.png").is_file()
        assert (report.index.parent / "figures" / f"{name}.pdf").is_file()
    expected_notes = [] if _has_posthocs() else ["figure 'Critical-difference diagram' skipped"]
    assert [n.split(":")[0] for n in report.notes] == expected_notes
    for heading in ("Comparison tables", "Test ece (%, lower is better)", "Cost", "Ranking across cells",
                    "Environment and settings", "Runs", "torch", "git_sha"):
        assert heading in text
    links = [part.split('"', 1)[0] for part in text.split('href="')[1:] if not part.startswith(("#", "data:"))]
    records_linked = [link for link in links if link.endswith(".json")]
    assert len(records_linked) == 54
    assert all((report.index.parent / link).resolve().is_file() for link in links)


def _has_posthocs() -> bool:
    try:
        import scikit_posthocs  # noqa: F401
    except ImportError:
        return False
    return True


def test_report_command_without_the_extra_and_without_torch(tmp_path: Path) -> None:
    """`mmbench report` imports no torch; without scikit-posthocs it says so in one line and goes on."""
    from tests.test_report import fake_record

    for s in range(3):
        for m, v in (("a", 0.6), ("b", 0.7), ("c", 0.65)):
            for rate in (0.2, 0.5):
                fake_record(tmp_path / "res", m, s, v + 0.01 * s - 0.1 * rate, rate=rate)
    code = ("import sys; sys.modules['scikit_posthocs'] = None; sys.argv = ['mmbench', 'report', sys.argv[1], "
            "'--out', sys.argv[2]]\nfrom mmbench.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n"
            "    print('exit', e.code)\nprint('torch imported:', 'torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "res"), str(tmp_path / "page")],
                         capture_output=True, text=True, timeout=300)
    assert "exit 0" in run.stdout and "torch imported: False" in run.stdout, run.stdout + run.stderr
    notes = [line for line in run.stderr.splitlines() if line.startswith("note:")]
    assert any("Critical-difference diagram' skipped: the critical-difference diagram needs scikit-posthocs" in n
               for n in notes), run.stderr
    assert "Traceback" not in run.stderr and (tmp_path / "page" / "index.html").is_file()


def test_runner_saves_capped_embeddings(tmp_path: Path, monkeypatch) -> None:
    """The predictions .npz holds emb_<modality> for the first EMBEDDING_ROWS test rows (float16), zero
    where the modality is absent."""
    from mmbench import runner
    from mmbench.config import resolve
    from mmbench.protocols import MissingSpec
    from mmbench.records import record_path

    monkeypatch.setattr(runner, "EMBEDDING_ROWS", 7)
    spec = resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0,
                   overrides={"train.epochs": 1, "data.n_samples": 120})
    rec, _ = runner.execute(spec, tmp_path)
    assert rec.status == "ok", rec.error
    with np.load(record_path(tmp_path, spec).with_name(rec.files["predictions"])) as z:
        assert z["emb_image"].shape[0] == z["emb_tabular"].shape[0] == 7
        assert z["emb_image"].dtype == np.float16 and z["logits"].shape[0] > 7
        present = z["present"][:7]
        assert np.all(z["emb_image"][~present[:, 0]] == 0) and np.all(z["emb_tabular"][~present[:, 1]] == 0)
        assert np.abs(z["emb_image"][present[:, 0]]).sum() > 0


# --------------------------------------------------------------------------------------- slow: tools
LATEX_DOC = "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[margin=1cm,landscape]{geometry}\n" \
            "\\begin{document}\n%s\n\\end{document}\n"


@pytest.mark.slow
def test_latex_tables_compile_with_pdflatex(records: list[RunRecord], tmp_path: Path) -> None:
    """Every LaTeX table, as printed, inside a minimal document with booktabs: pdflatex exits 0 and
    writes a PDF, with no undefined control sequence and no missing character."""
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (Debian: apt-get install texlive-latex-base texlive-latex-recommended)")
    tables = [render(records, "latex", m) for m in (None, "ece", "brier")]
    tables.append(stats.render_with_stats(records, "latex", test="ttest")[0])
    tables.append(render_costs(records, "latex"))
    odd = _odd_names_record(records[0])
    tables.append(render([odd, records[0]], "latex"))
    for i, table in enumerate(tables):
        tex = tmp_path / f"t{i}.tex"
        tex.write_text(LATEX_DOC % table)
        run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        log = (tmp_path / f"t{i}.log").read_text(errors="replace")
        assert run.returncode == 0, run.stdout[-3000:]
        assert (tmp_path / f"t{i}.pdf").stat().st_size > 1000
        assert "Missing character" not in log and "Undefined control sequence" not in log


def _odd_names_record(r: RunRecord) -> RunRecord:
    """A copy of ``r`` whose method and dataset names hold every LaTeX special character."""
    data = json.loads(r.model_dump_json())
    data["labels"]["method"] = "m_1&2%#$~^{x}[y]<z>|\\"
    data["labels"]["dataset"] = "d_set#1"
    data["run_id"] = "odd" + data["run_id"][3:]
    return parse_record(data, "test")


@pytest.mark.slow
def test_report_opens_in_headless_chromium(report, tmp_path: Path) -> None:
    """The page loads in Chromium with no console message, exception or failed load, every image decodes,
    the text is there, and a full-page screenshot is taken. Pages with a script error and a missing image
    are caught by the same check (it can fail)."""
    from tests.browser import chromium, open_page

    if chromium() is None:
        pytest.skip("Chromium not installed (Debian: apt-get install chromium)")
    shot = Path(os.environ.get("MMBENCH_SCREENSHOT_DIR", tmp_path)) / "report.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page = open_page(report.index.resolve().as_uri(), shot, tmp_path / "profile")
    assert page.loaded and page.errors() == []
    assert len(page.images) >= 7 and all(i["complete"] and i["w"] > 0 for i in page.images)
    assert "Comparison tables" in page.text and "Runs" in page.text
    assert "Critical-difference diagram" in page.text or not _has_posthocs()
    width, height = png_size(shot)
    assert 1200 <= width <= 1280 and height > 3000  # the window, less a scrollbar and shot.stat().st_size > 100_000
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body><img src="missing.png">'
                   "<script>undefinedFunction()</script></body></html>")
    caught = open_page(bad.as_uri(), tmp_path / "bad.png", tmp_path / "profile-bad").errors()
    assert any("ERR_FILE_NOT_FOUND" in e for e in caught) and any("undefinedFunction" in e for e in caught)
