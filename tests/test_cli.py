"""The command line end to end: run, table, check, ls, validate, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmbench.cli import main

FAST = ["--set", "train.epochs=1", "--set", "data.n_samples=120"]


def cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["mmbench", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder with two seeds of late_fusion (made once per module)."""
    out = tmp_path_factory.mktemp("results")
    subprocess.run([sys.executable, "-m", "mmbench.cli", "run", "--method", "late_fusion", "--dataset",
                    "synthetic-tiny", "--scenario", "both", "--rate", "0.5", "--seeds", "0-1",
                    "--output-dir", str(out), *FAST], check=True, capture_output=True)
    return out


def test_run_writes_records_and_summary(results: Path, monkeypatch, capsys) -> None:
    files = sorted((results / "synthetic-tiny").rglob("*.json"))
    assert len(files) == 2
    rec = json.loads(files[0].read_text())
    assert rec["status"] == "ok" and rec["labels"]["availability"] == "Image 75% / Tabular 75%"
    code, out, _ = cli(["run", "-m", "late_fusion", "-d", "synthetic-tiny", "--seeds", "0-1", "-o", str(results),
                        *FAST], monkeypatch, capsys)
    assert code == 0 and out.count("cached") >= 2 and "ceiling" in out


def test_table_formats(results: Path, monkeypatch, capsys) -> None:
    code, out, _ = cli(["table", "-r", str(results)], monkeypatch, capsys)
    assert code == 0 and "late_fusion" in out and "±" in out and "| 75%" in out
    code, out, _ = cli(["table", "-r", str(results), "-f", "csv"], monkeypatch, capsys)
    assert out.splitlines()[0].startswith("dataset,scenario,rate,test_rate")
    code, out, _ = cli(["table", "-r", str(results), "-f", "latex"], monkeypatch, capsys)
    assert "\\begin{tabular}" in out


def test_check_exit_codes(results: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    ref = tmp_path / "ref.csv"
    assert cli(["check", "-r", str(results), "--reference", str(ref), "--save-reference"], monkeypatch, capsys)[0] == 0
    assert cli(["check", "-r", str(results), "--reference", str(ref)], monkeypatch, capsys)[0] == 0
    text = ref.read_text().splitlines()
    header, row = text[0].split(","), text[1].split(",")
    i = header.index("mean")
    row[i] = f"{float(row[i]) + 0.05:.6f}"  # the reference was 5 points better: a regression
    ref.write_text("\n".join([text[0], ",".join(row)]) + "\n")
    code, _, err = cli(["check", "-r", str(results), "--reference", str(ref), "--tolerance", "0.02", "--k-se", "0"],
                       monkeypatch, capsys)
    assert code == 1 and "regressed" in err
    assert cli(["check", "-r", str(results), "--reference", str(ref), "--tolerance", "0.1", "--k-se", "0"],
               monkeypatch, capsys)[0] == 0
    # the allowance follows the spread: k * sqrt(std_ref^2/n_ref + std_cur^2/n_cur), here std_ref = std_cur
    std, n = float(row[header.index("std")]), int(row[header.index("n")])
    se = (2 * std**2 / n) ** 0.5
    assert std > 0 and n == 2
    k_pass, k_fail = 0.051 / se, 0.049 / se  # a 0.05 drop is inside k_pass SEs and outside k_fail SEs
    assert cli(["check", "-r", str(results), "--reference", str(ref), "--tolerance", "0", "--k-se", f"{k_pass:.6f}"],
               monkeypatch, capsys)[0] == 0
    assert cli(["check", "-r", str(results), "--reference", str(ref), "--tolerance", "0", "--k-se", f"{k_fail:.6f}"],
               monkeypatch, capsys)[0] == 1
    row[header.index("method")] = "ghost"
    ref.write_text("\n".join([text[0], ",".join(row)]) + "\n")
    code, _, err = cli(["check", "-r", str(results), "--reference", str(ref)], monkeypatch, capsys)
    assert code == 1 and "missing" in err


@pytest.mark.parametrize("args, message", [
    (["run", "-m", "late_fusoin", "-d", "synthetic-tiny"], "did you mean 'late_fusion'"),
    (["run", "-m", "late_fusion", "-d", "synthetc"], "did you mean 'synthetic'"),
    (["run", "-m", "late_fusion", "-d", "synthetic-tiny", "--rate", "1.5"], "must be in [0, 1]"),
    (["run", "-m", "late_fusion", "-d", "synthetic-tiny", "--seeds", "a-b"], "expected a seed range"),
    (["run", "-m", "late_fusion", "-d", "synthetic-tiny", "--set", "train.epochs=0"], "train.epochs: must be >= 1"),
    (["run", "-m", "late_fusion", "-d", "synthetic-tiny", "--scenario", "imbalanced", "--rates", "image=0.9,tabular=0.5"], "sum to"),
    (["run", "-m", "late_fusion", "-d", "synthetic-tiny", "--protocol", "dfpl-tabel1"], "did you mean 'dfpl-table1'"),
    (["table", "-r", "{empty}"], "no run records"),
    (["table", "-r", "{empty}/missing"], "does not exist"),
    (["check", "-r", "{empty}", "--reference", "{empty}/none.csv"], "not found"),
    (["ls", "method"], "did you mean 'methods'"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(args, message, tmp_path: Path, monkeypatch, capsys) -> None:
    args = [a.replace("{empty}", str(tmp_path)) for a in args]
    if args[0] == "run":
        args += ["-o", str(tmp_path / "out")]
    code, out, err = cli(args, monkeypatch, capsys)
    assert code == 2, (out, err)
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_pretrained_weights_offline_is_one_clear_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = cli(["run", "-m", "late_fusion", "-d", "synthetic-tiny", "--set", "encoders.image.pretrained=true",
                        "-o", str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 2 and "could not load pretrained weights" in err and "pretrained=false" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing half-written: no lock file, manifest or folder


def test_bad_yaml_in_user_config_dir(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "mine.yaml").write_text("impl: late_fusion\nparams: {dropout: [\n")
    code, _, err = cli(["run", "-m", "mine", "-d", "synthetic-tiny", "--config-dir", str(tmp_path),
                        "-o", str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 2 and "mine.yaml" in err and "invalid YAML" in err
    assert not (tmp_path / "out").exists()


def test_ls_and_validate(monkeypatch, capsys) -> None:
    code, out, _ = cli(["ls", "methods"], monkeypatch, capsys)
    assert code == 0 and "late_fusion" in out
    code, out, _ = cli(["ls", "datasets"], monkeypatch, capsys)
    assert code == 0 and "synthetic" in out
    code, out, _ = cli(["ls", "protocols"], monkeypatch, capsys)
    assert code == 0 and "dfpl-table1" in out
    code, out, _ = cli(["validate"], monkeypatch, capsys)
    assert code == 0 and "valid" in out


def test_dry_run_plans_a_protocol(tmp_path: Path, monkeypatch, capsys) -> None:
    code, out, _ = cli(["run", "-m", "late_fusion", "-d", "synthetic-tiny", "--protocol", "dfpl-table1", "--dry-run",
                        "-o", str(tmp_path)], monkeypatch, capsys)
    assert code == 0 and "Planned runs (27" in out
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name, extra, methods, scenarios, rates, test_rates", [
    # DFPL Fig. 3(a, b): MIMIC, trained with both / only the table missing at 20..60%, tested at 90%
    ("dfpl-fig3", [], ["dfpl", "drfuse", "dmrnet", "shaspec", "ifmmin"], ["both", "tabular"],
     [0.2, 0.3, 0.4, 0.5, 0.6], [0.9]),
    # DPL Fig. 6: trained with image / table / both missing at 70%, tested at 10..90% (dataset given)
    ("dpl-fig6", ["-d", "synthetic-tiny"], ["late_fusion", "late_fusion+dpl"], ["image", "tabular", "both"],
     [0.7], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]),
])
def test_paper_figure_protocols_plan_their_cells(tmp_path: Path, monkeypatch, capsys, name: str, extra: list[str],
                                                 methods: list[str], scenarios: list[str], rates: list[float],
                                                 test_rates: list[float]) -> None:
    from mmbench.config import load_protocol

    proto = load_protocol(name)
    assert proto.description and proto.cite and proto.methods == methods
    cells = {(c.scenario, c.rate, c.test_rate) for c in proto.cells()}
    assert len(proto.cells()) == len(scenarios) * len(rates) * len(test_rates) == len(cells)
    assert cells == {(sc, r, t) for sc in scenarios for r in rates for t in test_rates}
    n = len(methods) * len(cells) * len(proto.seeds)  # one dataset
    code, out, _ = cli(["run", "--protocol", name, *extra, "--dry-run", "-o", str(tmp_path)], monkeypatch, capsys)
    assert code == 0 and f"Planned runs ({n}," in out
    assert not any(tmp_path.iterdir())


def test_console_script_help() -> None:
    script = Path(sys.executable).parent / "mmbench"
    if not script.exists():  # pragma: no cover - not installed as a console script
        pytest.skip("console script not installed next to the interpreter")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "run" in out.stdout and "table" in out.stdout
