"""``mmbench bench``: paired step-time ratios against late fusion, loader and evaluation throughput,
the frozen-encoder speed-up, a stand-in when the card's data are absent, a table and a JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmbench.bench import parse_stand_in, run_bench
from mmbench.errors import MMBenchError

SMALL = {"train.batch_size": 8, "data.n_samples": 96}


def test_bench_measures_every_method_against_late_fusion(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MMBENCH_CACHE", str(tmp_path / "cache"))
    res = run_bench(["drfuse"], "synthetic-tiny", overrides=SMALL, rounds=2, steps=1, warmup=0, log=lambda m: None)
    lf, dr = res["methods"]
    assert lf["method"] == "late_fusion" and lf["ratio"] == 1.0 and lf["ratio_iqr"] == [1.0, 1.0]
    assert dr["ratio"] > 0 and dr["ratio_iqr"][0] <= dr["ratio"] <= dr["ratio_iqr"][1]
    for r in (lf, dr):
        assert r["loader_over_step"] > 0 and r["eval_samples_per_s"] > 0 and r["parameters"] > 0
        assert r["peak_memory_mb"] is None  # CPU: no per-step peak
    assert lf["frozen"]["speedup"] > 0 and lf["frozen"]["trainable_parameters"] < lf["parameters"]
    assert "shares only its stem" in dr["frozen"]["error"]  # DrFuse refuses frozen encoders
    assert res["feature_cache_seconds"] > 0 and "the card's data" in res["data"]
    assert res["goals"] == {"step": 1.3, "step_mce": 2.0, "loader": 5.0, "frozen": 10.0}


def test_bench_uses_a_stand_in_when_the_data_are_absent(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MMBENCH_DATA", raising=False)
    tiny = {"train.batch_size": 4, "data.image_size": 16, "hidden": 8, "encoders.image.name": "test_resnet",
            "encoders.tabular.depth": 1, "encoders.tabular.heads": 2}
    res = run_bench([], "dvm", overrides=tiny, rounds=1, steps=1, warmup=0, frozen=False,
                    stand_in="classes=5,cat=1,num=3", log=lambda m: None)
    assert res["data"].startswith("stand-in for dvm") and "5 classes, 1 categorical + 3 continuous" in res["data"]
    assert res["augment"] is True  # the card's augmentation is part of the loader measured
    assert [r["method"] for r in res["methods"]] == ["late_fusion"] and "frozen" not in res["methods"][0]
    assert parse_stand_in(None) == {"classes": 8, "cat": 2, "num": 4}
    with pytest.raises(MMBenchError, match="--stand-in"):
        parse_stand_in("classes=many")


def test_bench_cli_writes_table_and_json(tmp_path: Path, monkeypatch, capsys) -> None:
    from mmbench.cli import main

    monkeypatch.setenv("MMBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "b.json"
    monkeypatch.setattr("sys.argv", ["mmbench", "bench", "--methods", "late_fusion+dpl", "-d", "synthetic-tiny",
                                     "--set", "train.batch_size=8", "--set", "data.n_samples=96", "--rounds", "1",
                                     "--steps", "1", "--warmup", "0", "--no-frozen", "--json", str(out)])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code in (0, None)
    data = json.loads(out.read_text())
    assert [r["method"] for r in data["methods"]] == ["late_fusion", "late_fusion+dpl"]
    text = capsys.readouterr().out
    assert "late_fusion+dpl" in text and "× late_fusion" in text
