"""The CLI's promise, tried as a new user would: every bad input ends as ONE line on stderr, exit code 2,
no traceback, and no file left behind.

Each case runs the *installed* ``mmbench`` console script in a subprocess (so the Typer/click release the
install resolved is the one tested, usage errors included), in its own folder holding a small "world" of
files to get wrong (a file where a folder is expected, an empty results folder, a truncated record, a
record of a newer schema, references that are not numbers, a card whose images are all missing, ...).
The folder must be byte-for-byte what it was before the command.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
HISTORIC = HERE / "fixtures" / "historic_results"
R = ["run", "-m", "late_fusion", "-d", "synthetic-tiny"]
REF_HEADER = "dataset,scenario,rate,test_rate,availability,test_availability,method,metric,mean,std,n\n"

#: (id, arguments, a piece of the expected one-line message)
CASES: list[tuple[str, list[str], str]] = [
    # usage errors (raised by the click that Typer vendors)
    ("no-such-command", ["rnu"], "No such command 'rnu'"),
    ("ls-without-what", ["ls"], "Missing argument"),
    ("ls-typo", ["ls", "method"], "did you mean 'methods'"),
    ("rate-not-a-number", ["run", "--rate", "abc"], "'--rate'"),
    ("jobs-not-a-number", ["run", "--jobs", "x"], "'--jobs'"),
    ("unknown-flag", ["run", "--bogus"], "No such option: --bogus"),
    ("flag-without-value", ["run", "-m"], "requires an argument"),
    ("table-format", ["table", "--format", "xlsx"], "'xlsx' is not one of"),
    ("plot-kind", ["plot", "--kind", "pie"], "'pie' is not one of"),
    ("stats-x", ["stats", "--x", "foo"], "'foo' is not one of"),
    ("stats-reference", ["stats", "--reference", "foo"], "'foo' is not one of"),
    ("stats-test", ["table", "--stats-test", "t"], "'t' is not one of"),
    ("executor", ["run", "--executor", "k8s"], "'k8s' is not one of"),
    ("negative-tolerance", ["check", "--tolerance", "-1"], "'--tolerance'"),
    ("alpha-above-one", ["table", "--alpha", "2"], "'--alpha'"),
    ("negative-sim-seed", [*R, "--sim-seed", "-1"], "'--sim-seed'"),
    ("zero-jobs", [*R, "--executor", "local", "--jobs", "0"], "'--jobs'"),
    ("metric", ["table", "-r", "records", "--metric", "f2"], "'f2' is not one of"),
    # names
    ("method-typo", ["run", "-m", "late_fusoin", "-d", "synthetic-tiny"], "did you mean 'late_fusion'"),
    ("dataset-typo", ["run", "-m", "late_fusion", "-d", "synthetc"], "did you mean 'synthetic'"),
    ("protocol-typo", ["run", "--protocol", "dfpl-tabel1"], "did you mean 'dfpl-table1'"),
    ("head-unknown", [*R, "--head", "nonexistent"], "unknown head 'nonexistent'"),
    ("balancer-typo", [*R, "--set", "balancer=nnoe"], "did you mean 'none'"),
    ("no-method", ["run", "-d", "synthetic-tiny"], "no method given"),
    ("no-dataset", ["run", "-m", "late_fusion"], "no dataset given"),
    ("prepare-unknown", ["prepare", "nonexistent"], "unknown dataset 'nonexistent'"),
    # missingness cells
    ("rate-above-one", [*R, "--rate", "1.5"], "must be in [0, 1]"),
    ("rate-negative", [*R, "--rate", "-0.1"], "must be in [0, 1]"),
    ("test-rate-above-one", [*R, "--test-rate", "2"], "must be in [0, 1]"),
    ("imbalanced-without-rates", [*R, "--scenario", "imbalanced"], "needs --rates"),
    ("imbalanced-sum", [*R, "--scenario", "imbalanced", "--rates", "image=0.9,tabular=0.5"], "sum to"),
    ("imbalanced-modality", [*R, "--scenario", "imbalanced", "--rates", "imag=0.5"], "unknown modalities"),
    ("imbalanced-garbage", [*R, "--scenario", "imbalanced", "--rates", "garbage"], "modality=rate pairs"),
    ("imbalanced-with-rate", [*R, "--scenario", "imbalanced", "--rates", "image=0.2", "--rate", "0.3"],
     "not --rate"),
    ("rates-without-imbalanced", [*R, "--rates", "image=0.5", "--scenario", "both"], "--rates is for"),
    ("test-rates-without-imbalanced", [*R, "--test-rates", "image=0.1"], "--test-rates is for"),
    ("none-with-rate", [*R, "--scenario", "none", "--rate", "0.5"], "takes no --rate"),
    ("none-with-test-rate", [*R, "--scenario", "none", "--test-rate", "0.3"], "takes no --rate or --test-rate"),
    ("unknown-scenario", [*R, "--scenario", "text"], "unknown missingness scenario"),
    ("protocol-and-rate", ["run", "--protocol", "ci-smoke", "--rate", "0.3"], "exclusive"),
    # seeds
    ("seeds-letters", [*R, "--seeds", "a-b"], "expected a seed range"),
    ("seeds-reversed", [*R, "--seeds", "5-2"], "expected a seed range"),
    ("seeds-negative", [*R, "--seeds=-1"], "seeds must be >= 0"),
    ("seeds-huge", [*R, "--seeds", "0-100000", "--dry-run"], "more than the 10000"),
    # --set
    ("set-epochs-zero", [*R, "--set", "train.epochs=0"], "train.epochs: must be >= 1"),
    ("set-lr-negative", [*R, "--set", "train.lr=-1"], "train.lr: must be > 0"),
    ("set-lr-text", [*R, "--set", "train.lr=abc"], "train.lr: expected a number"),
    ("set-epochs-float", [*R, "--set", "train.epochs=2.5"], "train.epochs"),
    ("set-epochs-bool", [*R, "--set", "train.epochs=true"], "train.epochs"),
    ("set-unknown-root", [*R, "--set", "nonsense.x=1"], "--set nonsense.x: unknown key"),
    ("set-unknown-train-key", [*R, "--set", "train.epochz=1"], "did you mean 'epochs'"),
    ("set-unknown-param", [*R, "--set", "params.K=10"], "unknown key 'K'"),
    ("set-head-param-unknown", [*R, "--head", "dpl", "--set", "head.nope=1"], "head.params: unknown key 'nope'"),
    ("set-head-param-range", [*R, "--head", "dpl", "--set", "head.params.supcon_weight=-1"], "must be >= 0"),
    ("set-balancer-param", [*R, "--set", "balancer.ref_epochs=1"], "balancer.params: unknown key 'ref_epochs'"),
    ("set-data-negative", [*R, "--set", "data.n_samples=-5"], "n_samples: must be >= 10"),
    ("set-split-fractions", [*R, "--set", "data.split_fractions=[0.5,0.5,0.5]"], "must sum to 1"),
    ("set-encoder-type", [*R, "--set", "encoders.image.name=3"], "expected a valid string"),
    ("set-encoder-no-field", [*R, "--set", "encoders.image.x.y=1"], "encoders.<image|tabular>.<field>"),
    ("set-no-equals", [*R, "--set", "noequals"], "expected key=value"),
    ("set-hidden", [*R, "--set", "hidden=0"], "hidden: must be >= 1"),
    ("set-device-cuda", [*R, "--set", "train.device=cuda:7"], "CUDA device(s)"),
    ("set-device-garbage", [*R, "--set", "train.device=tpu"], "train.device must be"),
    ("set-optimizer", [*R, "--set", "train.optimizer=lion"], "train.optimizer: expected"),
    # executors
    ("gpus-without-gpu", [*R, "--executor", "local", "--gpus", "0"], "CUDA device(s)"),
    ("gpus-garbage", [*R, "--executor", "local", "--gpus", "x"], "--gpus"),
    ("gpus-sequential", [*R, "--gpus", "0"], "--gpus is for --executor local"),
    ("jobs-sequential", [*R, "--jobs", "2"], "--jobs is for --executor local"),
    ("slurm-flag-sequential", [*R, "--slurm-partition", "x"], "--slurm-* options are for --executor slurm"),
    ("slurm-time", [*R, "--executor", "slurm", "--slurm-time", "2h"], "--slurm-time '2h'"),
    # paths
    ("config-dir-missing", [*R, "--config-dir", "nowhere"], "not a directory"),
    ("output-dir-is-file", [*R, "-o", "afile"], "afile is a file, not a folder"),
    ("output-dir-under-file", [*R, "-o", "afile/sub"], "afile is a file, not a folder"),
    ("results-missing", ["table", "-r", "nowhere"], "does not exist"),
    ("results-empty", ["table", "-r", "empty"], "no run records"),
    ("results-is-file", ["table", "-r", "afile"], "not a folder"),
    ("results-only-truncated", ["table", "-r", "trunc"], "truncated or not JSON"),
    ("results-only-newer", ["stats", "-r", "newer"], "upgrade mmbench"),
    ("results-only-failed", ["plot", "-r", "failed"], "1 run(s) failed"),
    ("filters-match-nothing", ["table", "-r", "records", "-d", "nothere"], "match the given filters"),
    ("table-out-folder", ["table", "-r", "records", "--out", "adir"], "is a folder"),
    ("table-out-under-file", ["table", "-r", "records", "--out", "afile/x.md"], "afile is a file"),
    ("plot-out-folder", ["plot", "-r", "records", "--out", "adir"], "is a folder"),
    ("plot-out-under-file", ["plot", "-r", "records", "--out", "afile/fig"], "afile is a file"),
    ("stats-csv-dir-file", ["stats", "-r", "records", "--csv-dir", "afile"], "afile is a file"),
    ("save-reference-folder", ["check", "-r", "records", "--reference", "adir", "--save-reference"], "is a folder"),
    ("reference-missing", ["check", "-r", "records", "--reference", "nope.csv"], "not found"),
    ("reference-not-a-number", ["check", "-r", "records", "--reference", "abc.csv"], "expected a finite number"),
    ("reference-nan", ["check", "-r", "records", "--reference", "nan.csv"], "expected a finite number"),
    ("reference-empty", ["check", "-r", "records", "--reference", "header.csv"], "no rows"),
    ("reference-columns", ["check", "-r", "records", "--reference", "bad.csv"], "missing columns"),
    ("reference-binary", ["check", "-r", "records", "--reference", "bin.csv"], "reference file bin.csv"),
    # configs and data
    ("validate-missing", ["validate", "nothere.yaml"], "no such file or folder"),
    ("validate-bad-yaml", ["validate", "cfg/methods/broken.yaml"], "invalid YAML"),
    ("validate-wrong-folder", ["validate", "other/x.yaml"], "cannot tell its kind"),
    ("validate-unknown-key", ["validate", "cfg2/methods/typo.yaml"], "unknown key 'paramz'"),
    ("run-bad-yaml", ["run", "-m", "broken", "-d", "synthetic-tiny", "--config-dir", "cfg"], "invalid YAML"),
    ("prepare-no-root", ["prepare", "dvm"], "no data root"),
    ("run-data-missing", ["run", "-m", "late_fusion", "-d", "csv-example", "--set", "train.epochs=1"],
     "no data root"),
    ("run-images-unreadable", ["run", "-m", "late_fusion", "-d", "mine", "--config-dir", "cfg",
                               "--data-root", "csvdata"], "no image of the 40 rows could be read"),
]


def _world(root: Path) -> None:
    """The files a case may get wrong, written into the case's own folder."""
    (root / "afile").write_text("x")
    for d in ("adir", "empty", "trunc", "newer", "failed", "other", "cfg/methods", "cfg/datasets", "cfg2/methods",
              "csvdata/mine"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "trunc" / "r.json").write_text('{"schema_version": 2, "run_id": "ab')
    (root / "newer" / "r.json").write_text(json.dumps({"schema_version": 99, "run_id": "x"}))
    shutil.copytree(HISTORIC, root / "records")
    rec = json.loads(next((root / "records" / "v1-early").glob("*.json")).read_text())
    (root / "failed" / "r.json").write_text(json.dumps({**rec, "status": "failed", "error": "boom"}))
    row = "synthetic-tiny,both,0.5,0.5,x,x,late_fusion,accuracy,{},0,1\n"
    (root / "abc.csv").write_text(REF_HEADER + row.format("abc"))
    (root / "nan.csv").write_text(REF_HEADER + row.format("nan"))
    (root / "header.csv").write_text(REF_HEADER)
    (root / "bad.csv").write_text("a,b\n1,2\n")
    (root / "bin.csv").write_bytes(b"\x00\x01\xffgarbage")
    (root / "cfg" / "methods" / "broken.yaml").write_text("impl: late_fusion\nparams: {dropout: [\n")
    (root / "cfg2" / "methods" / "typo.yaml").write_text("impl: late_fusion\nparamz: {}\n")
    (root / "other" / "x.yaml").write_text("impl: late_fusion\n")
    (root / "cfg" / "datasets" / "mine.yaml").write_text(
        "name: mine\nadapter: csv\noptions: {dir: mine, table: t.csv, image_column: img, label_column: y, "
        "continuous: [a]}\n")
    lines = ["img,y,a"] + [f"nope/{i}.png,{i % 2},{i / 10}" for i in range(40)]
    (root / "csvdata" / "mine" / "t.csv").write_text("\n".join(lines) + "\n")


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(root.rglob("*"))}


def _console_script() -> str:
    script = Path(sys.executable).parent / "mmbench"
    if not script.is_file():
        pytest.skip("the mmbench console script is not installed next to this Python (pip install -e .)")
    return str(script)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, bool]]:
    """Every case run once (two at a time): id -> (exit code, stderr, folder unchanged)."""
    script = _console_script()
    base = tmp_path_factory.mktemp("battery")
    env = {k: v for k, v in os.environ.items() if k not in ("MMBENCH_DATA", "PYTEST_CURRENT_TEST")}
    env.update(OMP_NUM_THREADS="1", MMBENCH_CACHE=str(base / "_cache"), HF_HUB_OFFLINE="1", COLUMNS="200")

    def one(case: tuple[str, list[str], str]) -> tuple[str, tuple[int, str, bool]]:
        name, args, _ = case
        root = base / name
        root.mkdir()
        _world(root)
        before = _snapshot(root)
        proc = subprocess.run([script, *args], cwd=root, env=env, capture_output=True, text=True, timeout=300)
        return name, (proc.returncode, proc.stderr, _snapshot(root) == before)

    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, CASES))


@pytest.mark.parametrize("name, args, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(name: str, args: list[str], message: str,
                                                       outcomes: dict[str, tuple[int, str, bool]]) -> None:
    code, err, unchanged = outcomes[name]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err, err
    assert unchanged, f"{name}: the command left files behind or changed them"


def test_the_battery_is_large_enough() -> None:
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


def test_usage_errors_are_tested_under_the_resolved_typer() -> None:
    """The Typer release the install resolved raises its own click exceptions (Typer >= 0.25 vendors
    click): the usage-error cases above exercise whichever it is."""
    import typer

    from mmbench.cli import _usage_error_types

    names = {f"{t.__module__}.{t.__name__}" for t in _usage_error_types()}
    assert "click.exceptions.ClickException" in names
    if tuple(int(p) for p in typer.__version__.split(".")[:2]) >= (0, 25):
        assert any(n.startswith("typer._click") for n in names), names
