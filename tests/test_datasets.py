"""Real-dataset adapters, their cache and encoders, on fixture files written in each official layout.

The fixtures (``tests/fixtures_data.py``) are written once per session under a temporary data
root; ``MMBENCH_CACHE`` points at a temporary cache. Every expected count below follows from how
the fixture was built (see its docstrings), and the numeric checks are worked out by hand.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mmbench.config import load_dataset, parse_set, resolve
from mmbench.core import MODALITIES, SPLITS
from mmbench.data.adni import ADNIDataset, ADNIOptions, indicator_target
from mmbench.data.cache import MissingFiles, cache_key, read_cache
from mmbench.data.csv import CSVDataset, CSVOptions
from mmbench.data.dvm import DVMDataset, DVMOptions, categorical_first, scale_physical
from mmbench.data.mimic import (
    CHANNELS,
    Discretizer,
    MIMICDataset,
    MIMICOptions,
    normalize_episode,
    select_cxr,
)
from mmbench.data.pad_ufes import PADUFESDataset, PADUFESOptions
from mmbench.data.prepare import missing_lines, prepare_report
from mmbench.data.table import encode_features, random_split
from mmbench.encoders.build import SharedSpecific
from mmbench.encoders.ehr import EHREncoderConfig, EHRTransformer
from mmbench.encoders.image3d import ResNet3DConfig, ResNet3DEncoder
from mmbench.errors import DataError
from mmbench.protocols import MissingSpec
from mmbench.registry import DATASETS
from mmbench.runner import build_adapter
from tests import fixtures_data as fx

HAS_H5 = importlib.util.find_spec("h5py") is not None
HAS_NIB = importlib.util.find_spec("nibabel") is not None
needs_h5 = pytest.mark.skipif(not HAS_H5, reason="h5py not installed (pip install 'mmbench[medical]')")
needs_nib = pytest.mark.skipif(not HAS_NIB, reason="nibabel not installed (pip install 'mmbench[medical]')")


@pytest.fixture(autouse=True)
def one_thread() -> None:
    """Tiny tensors: one intra-op thread is fastest (and kind to a shared 2-core runner)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


#: facts returned by the fixture writers, filled by the ``root`` fixture
FACTS: dict[str, dict] = {}


@pytest.fixture(scope="session")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with every fixture layout, and a private cache folder."""
    base = tmp_path_factory.mktemp("data")
    facts = {
        "csv": fx.write_csv_dataset(base),
        "pad": fx.write_pad_ufes(base),
        "dvm": fx.write_dvm_features(base),
        "dvm_mmcl": fx.write_dvm_features(base, dirname="dvm-mmcl", layout="mmcl"),
        "dvm_raw": fx.write_dvm_raw(base),
        "mimic": fx.write_mimic(base),
    }
    if HAS_H5:
        facts["adni"] = fx.write_adni_h5(base)
    if HAS_NIB:
        facts["adni_nifti"] = fx.write_adni_nifti(base)
    old = os.environ.get("MMBENCH_CACHE")
    os.environ["MMBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    FACTS.update(facts)
    yield base
    if old is None:
        os.environ.pop("MMBENCH_CACHE", None)
    else:
        os.environ["MMBENCH_CACHE"] = old


def csv_adapter(root: Path, **kw) -> CSVDataset:
    opts = dict(dir="csv-example", table="samples.csv", image_column="path", image_size=16,
                label_column="diagnosis", categorical=("sex", "site"), continuous=("age", "size_mm"),
                drop=("leaky",), split_column="fold")
    opts.update(kw)
    return CSVDataset(CSVOptions(**opts), str(root))


# ------------------------------------------------------------------------------------------ csv
def test_csv_counts_and_natural_missingness(root: Path) -> None:
    facts = FACTS["csv"]
    report = csv_adapter(root).prepare()
    assert {s: r["n"] for s, r in report["splits"].items()} == facts["split_counts"]
    assert report["notes"][0].startswith("1 row(s) without a label")
    info, splits = csv_adapter(root).load()
    assert info.task == "multiclass" and info.class_names == ("benign", "malignant", "other")
    assert info.tabular.cat_cardinalities == (2, 3) and info.tabular.n_num == 2
    table = pd.read_csv(facts["dir"] / "samples.csv", keep_default_na=False)
    table = table[table["diagnosis"] != ""]
    absent_img, absent_tab = [], []
    for name in ("train", "val", "test"):
        ids = table[table["fold"] == name]["sample"].tolist()
        pres = splits[name].natural_present
        absent_img += [i for i, p in zip(ids, pres[:, 0].tolist(), strict=True) if not p]
        absent_tab += [i for i, p in zip(ids, pres[:, 1].tolist(), strict=True) if not p]
    assert sorted(absent_img) == facts["image_absent_rows"]  # empty path, 0 bytes, garbage, missing file
    assert absent_tab == facts["tabular_absent_rows"]  # every feature cell empty


def test_csv_encoding_by_hand(root: Path) -> None:
    _, splits = csv_adapter(root).load()
    tr = splits["train"]
    tab = tr.inputs["tabular"]
    # train rows are i % 5 in (0, 1, 2) among i = 0..29: s0, s1, s2, s5 (no label: dropped), s6, s7, ...
    # sex levels sorted: F -> 0, M -> 1; sample i has sex "FM"[i % 2]; s6's sex cell is empty (masked)
    ids = [i for i in range(30) if i % 5 in (0, 1, 2) and i != 5]
    row = {i: k for k, i in enumerate(ids)}
    assert tab["cat"][row[1], 0].item() == 1 and tab["cat"][row[2], 0].item() == 0
    assert not tab["cat_mask"][row[6], 0] and tab["cat"][row[6], 0].item() == 0
    assert not tab["num_mask"][row[7], 0]  # s7's age cell is empty
    # age = 20 + i; training rows with an observed age: ids minus s4 (not train) and s7
    ages = np.array([20.0 + i for i in ids if i != 7])
    mean, std = ages.mean(), ages.std()
    assert tab["num"][row[0], 0].item() == pytest.approx((20.0 - mean) / std, abs=1e-5)
    # uint8 pixels normalised with ImageNet statistics on batching; absent rows are zeros
    b = tr.batch(torch.arange(len(tr)), tr.natural_present)
    assert b.inputs["image"]["pixels"][row[0]].abs().sum() == 0  # s0 has no image
    assert torch.isfinite(b.inputs["image"]["pixels"]).all()


def test_csv_random_group_and_multilabel_splits(root: Path, tmp_path: Path) -> None:
    strat = csv_adapter(root, split_column=None, split_fractions=(0.6, 0.2, 0.2), split_seed=3)
    rep = strat.prepare()["splits"]
    # 29 labelled rows: benign 10, malignant 10, other 9 -> val/test round(0.2 * n_c) = 2 per class
    assert [rep[s]["classes"]["other"] for s in ("train", "val", "test")] == [5, 2, 2]
    assert [rep[s]["classes"]["benign"] for s in ("train", "val", "test")] == [6, 2, 2]
    grouped = csv_adapter(root, split_column=None, group_column="patient")
    _, sp = grouped.load()
    groups = [set(sp[s].groups.tolist()) for s in ("train", "val", "test")]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    d = tmp_path / "ml"
    d.mkdir()
    folds = ["train", "train", "val", "test", "train", "val"] * 3
    pd.DataFrame({"tags": ["a|b", "b", "", "c|a", "a", "b|c"] * 3, "x": range(18), "fold": folds}).to_csv(
        d / "t.csv", index=False)
    ml = CSVDataset(CSVOptions(dir=str(d), table="t.csv", image_column=None, label_column="tags",
                               label_delimiter="|", continuous=("x",), split_column="fold"), str(tmp_path))
    info, sp = ml.load()
    assert info.task == "multilabel" and info.class_names == ("a", "b", "c")
    assert sp["train"].y[:3].tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert not sp["train"].natural_present[:, 0].any()  # no image column: image absent everywhere


def test_random_split_by_hand() -> None:
    y = np.array([0] * 10 + [1] * 5)
    s = random_split(15, (0.6, 0.2, 0.2), seed=0, strata=y)
    # class 0: 2 val, 2 test; class 1: round(1.0) = 1 val, 1 test
    assert [(s[y == c] == k).sum() for c in (0, 1) for k in (0, 1, 2)] == [6, 2, 2, 3, 1, 1]
    g = np.repeat(np.arange(10), 2)
    sg = random_split(20, (0.6, 0.2, 0.2), seed=1, groups=g)
    assert all(len(set(sg[g == k])) == 1 for k in range(10)) and (sg == 2).sum() == 4


def test_encode_features_by_hand() -> None:
    df = pd.DataFrame({"c": ["b", "a", "", "b"], "x": ["1", "3", "5", "UNK"]})
    t = encode_features(df, ["c"], ["x"], fit_rows=np.array([True, True, False, True]))
    assert t.arrays["tabular.cat"][:, 0].tolist() == [1, 0, 0, 1]
    assert t.arrays["tabular.cat_mask"][:, 0].tolist() == [True, True, False, True]
    # fit on observed training cells 1 and 3: mean 2, population std 1 -> z = x - 2
    assert t.arrays["tabular.num"][:, 0].tolist() == [-1.0, 1.0, 3.0, 0.0]
    assert t.arrays["tabular.num_mask"][:, 0].tolist() == [True, True, True, False]
    assert t.present.tolist() == [True, True, True, True]


def test_csv_errors_are_one_line(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"column 'nope' named in options.categorical not found"):
        csv_adapter(root, categorical=("nope",)).load()
    with pytest.raises(DataError, match=r"expected .*missing\.csv"):
        csv_adapter(root, table="missing.csv").load()
    with pytest.raises(DataError, match=r"no data root"):
        CSVDataset(CSVOptions(dir="x"), None).load()
    with pytest.raises(DataError, match=r"continuous but row 0 holds 'F'"):
        csv_adapter(root, continuous=("sex",), categorical=("site",)).load()
    assert not csv_adapter(root, table="missing.csv").available()
    assert csv_adapter(root).available()


# ------------------------------------------------------------------------------------- pad-ufes
def test_pad_ufes(root: Path) -> None:
    a = PADUFESDataset(PADUFESOptions(image_size=16), str(root))
    rep = a.prepare()
    assert sum(r["n"] for r in rep["splits"].values()) == FACTS["pad"]["n"]
    info, sp = a.load()
    assert info.class_names == ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK")
    assert "biopsed" not in info.tabular.cat_names
    assert len(info.tabular.cat_names) == 18 and info.tabular.num_names == ("age", "diameter_1", "diameter_2")
    pats = [set(sp[s].groups.tolist()) for s in ("train", "val", "test")]
    assert not (pats[0] & pats[1]) and not (pats[0] & pats[2]) and not (pats[1] & pats[2])
    assert all(sp[s].natural_present.all() for s in sp)  # every row keeps age/region: tabular present
    grew = info.tabular.cat_names.index("grew")  # lesion k has grew = ["True", "False", "UNK"][k % 3]
    masks = torch.cat([sp[s].inputs["tabular"]["cat_mask"][:, grew] for s in sp])
    assert int((~masks).sum()) == 12  # 36 lesions, k % 3 == 2 for 12 of them
    with_biopsy = PADUFESDataset(PADUFESOptions(image_size=16, drop_biopsed=False), str(root)).load()[0]
    assert "biopsed" in with_biopsy.tabular.cat_names


# ------------------------------------------------------------------------------------------ DVM
def test_dvm_features_layout(root: Path) -> None:
    facts = FACTS["dvm"]
    info, sp = DVMDataset(DVMOptions(image_size=16), str(root)).load()
    assert [len(sp[s]) for s in ("train", "val", "test")] == list(facts["n"])
    assert info.tabular.cat_cardinalities == (5, 4, 3, 6) and info.tabular.n_num == 13
    assert info.tabular.cat_names == ("Color", "Bodytype", "Gearbox", "Fuel_type")
    assert info.num_classes == facts["classes"] and info.image_shape == (3, 16, 16)
    # every image decodes: paths valid here (used as they are, also outside resized_DVM/), paths from
    # another machine (re-rooted under <dir>/resized_DVM), names with spaces ("Land Rover$$...")
    assert all(sp[s].natural_present.all() for s in sp)
    paths = torch.load(facts["dir"] / "features" / "val_paths_all_views.pt")
    assert str(facts["elsewhere"]) in paths[2] and paths[1].startswith("/bigdata/") and " " in paths[0]
    csv = facts["dir"] / "features" / "dvm_features_val_noOH_all_views_physical_jittered_50_reordered.csv"
    first = csv.read_text().splitlines()[0].split(",")
    assert all("." not in code for code in first[:4]) and "." in first[4]  # codes written as integers
    features = pd.read_csv(csv, header=None)
    assert torch.equal(sp["val"].inputs["tabular"]["cat"], torch.tensor(features.iloc[:, :4].to_numpy()))
    assert torch.allclose(sp["val"].inputs["tabular"]["num"],
                          torch.tensor(features.iloc[:, 4:].to_numpy(), dtype=torch.float32))


def test_dvm_mmcl_column_order_is_reordered(root: Path) -> None:
    """MMCL's files (continuous columns first, no ``_reordered``, paths lists named ``..._server.pt``) read
    as TIP's: same codes, same values."""
    assert categorical_first([1, 1, 7, 1, 3]) == [2, 4, 0, 1, 3] and categorical_first([4, 2, 1]) == [0, 1, 2]
    _, tip = DVMDataset(DVMOptions(image_size=16), str(root)).load()
    for opts in (DVMOptions(dir="dvm-mmcl", image_size=16),  # found by the fallback to MMCL's names
                 DVMOptions(dir="dvm-mmcl", image_size=16, tabular_version="physical_jittered_50",
                            lengths_file="tabular_lengths_all_views_physical.pt")):
        a = DVMDataset(opts, str(root))
        rep = a.prepare()
        assert any("categorical-first by TIP's rule" in n for n in rep["notes"])
        info, mmcl = a.load()
        assert info.tabular.cat_cardinalities == (5, 4, 3, 6)
        assert info.tabular.cat_names == ("Color", "Bodytype", "Gearbox", "Fuel_type")
        for s in ("train", "val", "test"):
            for key in ("cat", "num"):
                assert torch.equal(mmcl[s].inputs["tabular"][key], tip[s].inputs["tabular"][key])
            assert torch.equal(mmcl[s].y, tip[s].y) and mmcl[s].natural_present.all()


def test_scale_physical_by_hand() -> None:
    def parts() -> dict[str, pd.DataFrame]:
        cols = {"Height": [5.0, 5.0, 5.0], "Width": [0.0, 1.0, 2.0], "Length": [0.0, 1.0, 2.0]}
        return {"train": pd.DataFrame({"Wheelbase": [1.0, 2.0, 3.0], **cols}),
                "test": pd.DataFrame({"Wheelbase": [4.0, 6.0], **{c: v[:2] for c, v in cols.items()}})}

    train_stats = parts()
    scale_physical(train_stats, "train")  # training mean 2, sample std 1
    assert train_stats["test"]["Wheelbase"].tolist() == [2.0, 4.0]
    assert train_stats["test"]["Height"].tolist() == [0.0, 0.0]  # a constant column: std counted as 1
    per_split = parts()
    scale_physical(per_split, "split")  # TIP: test mean 5, sample std sqrt(2)
    assert per_split["test"]["Wheelbase"].tolist() == pytest.approx([-2 ** -0.5, 2 ** -0.5])
    assert per_split["train"]["Wheelbase"].tolist() == train_stats["train"]["Wheelbase"].tolist() == [-1, 0, 1]


def test_dvm_raw_build(root: Path) -> None:
    a = DVMDataset(DVMOptions(dir="dvm-raw", image_size=16, min_adverts=5), str(root))
    rep = a.prepare()
    # 3 models x 12 adverts (the 2-advert model is filtered, the 1999 advert has no price row):
    # 50 % test = 18, then ceil(0.2 * 18) = 4 val, 14 train (sklearn train_test_split)
    assert [rep["splits"][s]["n"] for s in ("train", "val", "test")] == [14, 4, 18]
    assert rep["num_classes"] == 3 and any("built features/" in n for n in rep["notes"])
    feats = root / "dvm-raw" / "features"
    lengths = torch.load(feats / "tabular_lengths_all_views_physical_reordered.pt")
    assert lengths == [5, 2, 2, 2] + [1] * 13  # Color, Bodytype, Gearbox, Fuel_type levels in the fixture

    def physical(split: str) -> pd.DataFrame:  # columns 4..7: Wheelbase, Height, Width, Length
        name = f"dvm_features_{split}_noOH_all_views_physical_jittered_50_reordered.csv"
        return pd.read_csv(feats / name, header=None).iloc[:, 4:8]

    # default: z-scored with the training split's statistics, so only train has mean 0 / sample std 1
    train, test_by_train = physical("train"), physical("test")
    assert np.allclose(train.mean(), 0, atol=1e-6) and np.allclose(train.std(), 1)
    assert not np.allclose(test_by_train.mean(), 0, atol=1e-3)
    info, sp = a.load()
    assert all(sp[s].natural_present.all() for s in sp)
    # TIP's per-split scaling: the card's other setting rebuilds features/ (mmbench_build.json differs)
    tip = DVMDataset(DVMOptions(dir="dvm-raw", image_size=16, min_adverts=5, physical_scaling="split"), str(root))
    rep = tip.prepare()
    assert any("features/ rebuilt (physical_scaling: train -> split)" in n for n in rep["notes"])
    test_by_split = physical("test")
    assert np.allclose(test_by_split.mean(), 0, atol=1e-6) and np.allclose(test_by_split.std(), 1)
    assert np.allclose(physical("train"), train)  # the training rows are the same either way
    for j in test_by_split:  # the same raw values, another affine map: correlation exactly 1
        assert np.corrcoef(test_by_split[j], test_by_train[j])[0, 1] == pytest.approx(1.0)
    # the first cache saw its features/ rewritten: the fingerprint notices and it is rebuilt
    again = DVMDataset(DVMOptions(dir="dvm-raw", image_size=16, min_adverts=5), str(root)).prepare()
    assert again["rebuilt_because"] and "features/dvm_features_" in again["rebuilt_because"]
    assert np.allclose(physical("test"), test_by_train)


# ---------------------------------------------------------------------------------------- MIMIC
def test_discretizer_by_hand() -> None:
    d = Discretizer(1.0)
    assert d.width == 76 and len(d.continuous) == 12
    # column of a channel = widths of the channels before it (CRR 2, DBP 1, FiO2 1, GCS eye 8, motor 12,
    # total 13, verbal 12, glucose 1)
    hr = 2 + 1 + 1 + 8 + 12 + 13 + 12 + 1
    gcs_total = 2 + 1 + 1 + 8 + 12
    glucose = 2 + 1 + 1 + 8 + 12 + 13 + 12
    mask0 = 76 - 17
    assert d.header[hr] == "Heart Rate" and d.header[gcs_total] == "Glascow coma scale total->11"
    frame = pd.DataFrame({"Hours": ["0.5", "0.7", "2.2", "3.5"], "Heart Rate": ["80", "90", "", "70"],
                          "Glascow coma scale total": ["", "", "13", ""]})
    x = d.transform(frame, end=3.0)  # int(3 + 1 - 1e-6) = 3 bins; the row at 3.5 h is past the end
    assert x.shape == (3, 76)
    assert x[:, hr].tolist() == [90.0, 90.0, 90.0]  # last value of bin 0 wins, then "previous"
    assert x[:, mask0 + CHANNELS.index("Heart Rate")].tolist() == [1.0, 0.0, 0.0]
    assert x[:, glucose].tolist() == [128.0] * 3  # never observed: normal value, mask 0
    # GCS total: normal "15" (level 4) in bins 0-1, observed "13" (level 2) in bin 2
    assert x[:, gcs_total:gcs_total + 13].argmax(axis=1).tolist() == [4, 4, 2]
    assert x[:, gcs_total:gcs_total + 13].sum(axis=1).tolist() == [1.0, 1.0, 1.0]
    assert x[:, mask0 + CHANNELS.index("Glascow coma scale total")].tolist() == [0.0, 0.0, 1.0]
    assert x[0, 0:2].tolist() == [1.0, 0.0]  # capillary refill: normal "0.0" one-hot


def test_normalize_and_clip_by_hand() -> None:
    x = np.array([[3.0, 1.0], [7.0, 0.0], [2.0, 1.0]], dtype=np.float32)
    # channel 0 continuous with mean 2, std 0.5 -> 2, 10, 0 ; |z| > 4 clipped to 0
    out = normalize_episode(x, np.array([0]), np.array([2.0]), np.array([0.5]), clip=4.0)
    assert out.tolist() == [[2.0, 1.0], [0.0, 0.0], [0.0, 1.0]]
    a = MIMICDataset(MIMICOptions(), None)
    # rows 1, 2, 3 in every continuous channel: mean 2, sample variance (14 - 2*6*2 + 3*4) / 2 = 1
    means, stds = a.normalizer_stats(Discretizer(), np.full(12, 6.0), np.full(12, 14.0), 3)
    assert means.tolist() == [2.0] * 12 and stds.tolist() == [1.0] * 12


def test_select_cxr_rules() -> None:
    stays = pd.DataFrame({"subject_id": [1, 2, 3], "stay_id": [10, 20, 30],
                          "intime": ["2150-01-01 00:00:00"] * 3, "outtime": ["2150-01-05 00:00:00"] * 3})
    meta = pd.DataFrame({"dicom_id": ["a", "b", "c", "d"], "subject_id": [1, 1, 2, 3],
                         "ViewPosition": ["AP", "AP", "PA", "AP"],
                         "StudyDate": [21500101, 21500101, 21500101, 21500103],
                         "StudyTime": [20000.5, 213000.0, 100000.0, 10000.0]})
    got = select_cxr(meta, stays, 48.0, ("AP",))
    assert dict(zip(got.stay_id, got.dicom_id, strict=True)) == {10: "b"}  # latest AP within 48 h
    got = select_cxr(meta, stays, None, ("AP",))  # MedFuse phenotyping: until discharge
    assert dict(zip(got.stay_id, got.dicom_id, strict=True)) == {10: "b", 30: "d"}


def test_mimic_layout(root: Path) -> None:
    facts = FACTS["mimic"]
    a = MIMICDataset(MIMICOptions(image_size=16), str(root))
    info, sp = a.load()
    assert info.task == "multilabel" and info.num_classes == 25 and info.tabular_kind == "timeseries"
    assert info.timeseries_channels == 76 and info.tabular is None
    tr = sp["train"]
    assert tr.inputs["tabular"]["values"].shape == (16, 48, 76)
    # period_length 60.000000, 30.516666, 48.000000, 12.250000 (k % 4), capped at 48 h -> 48, 31, 48, 13
    # hourly bins; the last row (at the stay's end, up to 5e-7 h past the rounded period) is kept
    assert tr.inputs["tabular"]["lengths"][:4].tolist() == [48, 31, 48, 13]
    assert tr.inputs["tabular"]["values"][1, 31:].abs().sum() == 0  # zero padding
    # paired stays: k % 4 in (0, 1); the first one's JPG is 0 bytes -> 8 - 1 images in train
    assert tr.natural_present[:, 0].tolist() == [k % 4 in (0, 1) and k != 0 for k in range(16)]
    assert tr.natural_present[:, 1].all()
    absent = a.prepare()["missing_files"]["train"]  # what prepare names: 8 stays without, 1 empty JPG
    assert (absent["count"], absent["no_file"]) == (9, 8)
    assert absent["no_file_reason"] == "no AP X-ray within 48 h of admission"
    assert absent["first"] == [[str(facts["dir"] / "cxr" / "resized" / "d0a.jpg"), "empty file (0 bytes)"]]
    # two ICU episodes per subject ({subject}_episode{1,2}): stays 2j and 2j + 1 share a group
    assert tr.groups.tolist() == [str(10000 + k // 2) for k in range(16)]
    # the selected X-ray's pixels: the latest AP one (k = 1: 03:00:00, not 00:45:10)
    from mmbench.data.io import read_image

    jpg = next((facts["dir"] / "cxr" / "resized").rglob(f"{facts['expected_dicom'][30001]}.jpg"))
    assert np.array_equal(tr.inputs["image"]["pixels"][1].numpy(), read_image(jpg, 16, 3, "crop"))
    paired = MIMICDataset(MIMICOptions(image_size=16, cohort="paired"), str(root))
    rep = paired.prepare()
    # global stay index k: train 0-15, val 16-21, test 22-29; paired when k % 4 in (0, 1)
    assert [rep["splits"][s]["n"] for s in ("train", "val", "test")] == [8, 4, 4]
    assert len(facts["expected_dicom"]) == 16


def test_mimic_official_details_select_the_right_xray(root: Path) -> None:
    """Zero-padded StudyTime, empty ViewPosition, studies before admission, two stays per subject."""
    facts = FACTS["mimic"]
    meta = pd.read_csv(facts["dir"] / "cxr" / "mimic-cxr-2.0.0-metadata.csv")
    assert meta["ViewPosition"].isna().any() and (meta["StudyTime"] < 100000).any()
    stays = pd.read_csv(facts["dir"] / "ehr" / "root" / "all_stays.csv")
    got = select_cxr(meta, stays, 48.0, ("AP",))
    assert dict(zip(got.stay_id, got.dicom_id, strict=True)) == facts["expected_dicom"]
    listfile = (facts["dir"] / "ehr" / "phenotyping" / "train_listfile.csv").read_text().splitlines()
    assert listfile[2].split(",")[1] == "30.516666"  # period_length to 6 decimals, as mimic3-benchmarks


def test_mimic_normalizer_pickle(root: Path) -> None:
    """MedFuse's normaliser (a protocol-2 pickle over 76 channels) replaces the training statistics."""
    a = MIMICDataset(MIMICOptions(image_size=16, normalizer=fx.MIMIC_NORMALIZER), str(root))
    _, sp = a.load()
    hr = Discretizer().header.index("Heart Rate")
    values, lengths = sp["train"].inputs["tabular"]["values"], sp["train"].inputs["tabular"]["lengths"]
    # every stay's last row (at period_length) has heart rate 101: (101 - 80) / 7 = 3 in the last bin;
    # k % 4 == 0 lasts 60 h, so its last row lies past the 48 h cap
    last = [values[i, lengths[i] - 1, hr].item() for i in range(16) if i % 4]
    assert last == pytest.approx([3.0] * 12)


def test_mimic_gzipped_metadata(root: Path, tmp_path: Path) -> None:
    """PhysioNet ships ``mimic-cxr-2.0.0-metadata.csv.gz``: read as the unzipped file."""
    import gzip
    import shutil

    shutil.copytree(root / "mimic", tmp_path / "mimic")
    plain = tmp_path / "mimic" / "cxr" / "mimic-cxr-2.0.0-metadata.csv"
    with open(plain, "rb") as src, gzip.open(plain.with_suffix(".csv.gz"), "wb") as dst:
        shutil.copyfileobj(src, dst)
    plain.unlink()
    a = MIMICDataset(MIMICOptions(image_size=16), str(tmp_path))
    assert a.metadata().name == "mimic-cxr-2.0.0-metadata.csv.gz" and a.available()
    _, gz = a.load()
    _, ref = MIMICDataset(MIMICOptions(image_size=16), str(root)).load()
    for s in ("train", "val", "test"):
        assert torch.equal(gz[s].natural_present, ref[s].natural_present)
        assert torch.equal(gz[s].inputs["image"]["pixels"], ref[s].inputs["image"]["pixels"])
    assert "cxr/mimic-cxr-2.0.0-metadata.csv.gz" in a.fingerprint()["files"]


def test_mimic_malformed_is_one_line(root: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(root / "mimic", tmp_path / "mimic")
    stays = tmp_path / "mimic" / "ehr" / "root" / "all_stays.csv"
    pd.read_csv(stays).drop(columns=["intime"]).to_csv(stays, index=False)
    with pytest.raises(DataError, match=r"mimic: malformed data under .*intime"):
        MIMICDataset(MIMICOptions(image_size=8), str(tmp_path)).load()
    lst = tmp_path / "mimic" / "ehr" / "phenotyping" / "val_listfile.csv"
    lst.write_text("name,period\nx,1\n")
    with pytest.raises(DataError, match=r"val_listfile.csv: expected the header stay,period_length,stay_id"):
        MIMICDataset(MIMICOptions(image_size=8), str(tmp_path)).load()


# ----------------------------------------------------------------------------------------- ADNI
@needs_h5
def test_adni_h5(root: Path) -> None:
    facts = FACTS["adni"]
    assert indicator_target("C(ABETA_MISSING)[T.1]") == "ABETA" and indicator_target("AGE") is None
    info, sp = ADNIDataset(ADNIOptions(image_size=8), str(root)).load()
    assert [len(sp[s]) for s in ("train", "val", "test")] == list(facts["per_split"])
    assert info.image_shape == (1, 8, 8, 8) and info.class_names == ("CN", "MCI", "Dementia")
    assert info.tabular.num_names == ("AGE", "C(PTGENDER)[T.Male]", "PTEDUCAT", "ABETA", "TAU", "MMSE")
    mask = sp["train"].inputs["tabular"]["num_mask"]
    assert (~mask[:, 3]).tolist() == [k % 3 == 0 for k in range(12)]  # ABETA_MISSING -> masked cell
    assert sp["train"].y.tolist() == [k % 3 for k in range(12)]
    subj = ADNIDataset(ADNIOptions(image_size=8, split="subject", split_fractions=(0.6, 0.2, 0.2)), str(root))
    _, ss = subj.load()
    rids = [set(ss[s].groups.tolist()) for s in ("train", "val", "test")]
    assert not (rids[0] & rids[1]) and not (rids[0] & rids[2]) and not (rids[1] & rids[2])
    assert sum(len(r) for r in rids) == 12  # 24 scans, two visits per subject


@needs_nib
def test_adni_nifti_via_csv(root: Path) -> None:
    from mmbench.config import adapter_options, load_dataset

    card = load_dataset("adni-nifti")
    opts = adapter_options(card)
    a = CSVDataset(type(opts)(**{**opts.__dict__, "image_size": 8}), str(root))
    info, sp = a.load()
    assert info.image_shape == (1, 8, 8, 8) and sp["train"].inputs["image"]["pixels"].dtype == torch.uint8
    absent = sum(int((~sp[s].natural_present[:, 0]).sum()) for s in sp)
    assert absent == 1  # the corrupt .nii.gz


# ---------------------------------------------------------------------------------------- cache
def test_cache_reuse_and_key(root: Path) -> None:
    a = csv_adapter(root, image_size=8)
    first = a.prepare()
    again = csv_adapter(root, image_size=8).prepare()
    assert again["reused_cache"] and again["cache"] == first["cache"]
    assert csv_adapter(root, image_size=12).cache_path() != a.cache_path()
    k1 = cache_key("csv", a.options, root / "csv-example")
    assert k1 == cache_key("csv", csv_adapter(root, image_size=8).options, root / "csv-example")
    info, splits, meta = read_cache(Path(first["cache"]))
    assert meta["version"] == 2 and not Path(f"{first['cache']}.tmp-{os.getpid()}").exists()
    assert prepare_report(a, progress=False).count("\n") > 5
    # the adapter's version is part of the key: a behaviour change never reuses an older cache
    assert cache_key("csv", a.options, root / "csv-example", 2) != k1


def test_changed_data_rebuilds_the_cache(root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Data regenerated in place (same folder, same card) is noticed by the fingerprint, not served stale."""
    import shutil

    shutil.copytree(root / "csv-example", tmp_path / "csv-example")
    a = csv_adapter(tmp_path, image_size=8)
    first = a.prepare()
    assert not first["reused_cache"] and first["rebuilt_because"] is None
    fp = a.fingerprint()
    assert fp == first["fingerprint"] and fp["files"]["samples.csv"]["size"] > 0
    assert fp["image_counts"]["./"] == 30 + 1  # 29 image files left + the table under the image root ""
    unchanged = csv_adapter(tmp_path, image_size=8).prepare()
    assert unchanged["reused_cache"] and unchanged["rebuilt_because"] is None
    # regenerate the table in place: row s10 moves from train to test
    table = tmp_path / "csv-example" / "samples.csv"
    lines = table.read_text().splitlines()
    row = next(i for i, ln in enumerate(lines) if ln.startswith("s10,"))
    lines[row] = lines[row].replace(",train,", ",test,")
    size = table.stat().st_size
    table.write_text("\n".join(lines) + "\n")
    changed = csv_adapter(tmp_path, image_size=8).prepare()
    assert not changed["reused_cache"] and changed["rebuilt_because"] == f"samples.csv {size} -> {size - 1} bytes"
    before, after = first["splits"], changed["splits"]
    assert (after["train"]["n"], after["test"]["n"]) == (before["train"]["n"] - 1, before["test"]["n"] + 1)
    assert changed["cache"] == first["cache"]  # rebuilt in place, no second copy
    text = prepare_report(csv_adapter(tmp_path, image_size=8), progress=False)
    assert "already built" in text  # the rebuilt cache is current again
    st = table.stat()  # rewritten with the same size: the modification time tells
    os.utime(table, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    text = prepare_report(csv_adapter(tmp_path, image_size=8), progress=False)
    assert "(rebuilt: the data changed since it was built: samples.csv modified)" in text
    # an image file added: a run's load rebuilds and says so in one warning line
    (tmp_path / "csv-example" / "images" / "extra.png").write_bytes(b"x")
    with caplog.at_level("WARNING", logger="mmbench.data"):
        csv_adapter(tmp_path, image_size=8).load()
    [msg] = [r.getMessage() for r in caplog.records]
    assert "changed since its cache was built (./ 31 -> 32 files)" in msg and "\n" not in msg
    # generated data have no fingerprint
    from mmbench.data.synthetic import SyntheticDataset, SyntheticOptions

    assert SyntheticDataset(SyntheticOptions(n_samples=20, image_size=8)).fingerprint() is None


def test_prepare_names_missing_files_and_the_card(root: Path) -> None:
    rep = csv_adapter(root, image_size=8).prepare()
    # train holds s0 (empty path), s1 (0 bytes), s2 (not an image); val holds s3 (missing file)
    assert rep["missing_files"]["train"]["count"] == 3 and rep["missing_files"]["train"]["no_file"] == 1
    text = prepare_report(csv_adapter(root, image_size=8), progress=False, name="my-lesions")
    assert text.lstrip().startswith("my-lesions (adapter csv): multiclass, 3 classes")
    assert ("absent: train: 3 image(s) naturally absent: 1 row(s) without a file (no file given); "
            "images/img_001.png (empty file (0 bytes)), images/img_002.png (not a readable image)") in text
    assert "absent: val: 1 image(s) naturally absent: images/does_not_exist.png (not found)" in text
    # the first few per split, then a count
    m = MissingFiles(keep=2)
    m.record("test", ["a.png", None, "b.png", "c.png", "d.png"], np.array([False, False, False, False, True]))
    [line] = missing_lines(m.report())
    assert line == ("test: 4 image(s) naturally absent: 1 row(s) without a file (no file given); "
                    "a.png (not found), b.png (not found) and 1 more file(s)")


def test_never_readable_modality_is_an_error(root: Path) -> None:
    """A wrong image_root makes every image absent: one line naming the column and the first path."""
    with pytest.raises(DataError) as exc:
        csv_adapter(root, image_size=8, image_root="wrong").load()
    msg = str(exc.value)
    assert "\n" not in msg and "no image of the 29 rows could be read" in msg
    assert "column 'path'" in msg and f"first: {root / 'csv-example' / 'wrong' / 'images' / 'img_001.png'} (not found)" in msg
    assert not (Path(csv_adapter(root, image_size=8, image_root="wrong").cache_path()) / "meta.json").exists()
    with pytest.raises(DataError, match=r"no row of .* has an observed tabular cell \(sex, site, age"):
        csv_adapter(root, image_size=8, categorical=("sex", "site"), continuous=("age",), missing_values=(
            "", "F", "M", "arm", "leg", "face", *(f"{20.0 + i}" for i in range(30)))).load()


def test_prepare_report_on_generated_data() -> None:
    from mmbench.data.synthetic import SyntheticDataset, SyntheticOptions

    text = prepare_report(SyntheticDataset(SyntheticOptions(n_samples=50, image_size=8)), progress=False)
    assert "(generated)" in text and "train" in text and "30" in text  # 60 % of 50 in train


# ------------------------------------------------------------------------------------- encoders
def test_ehr_encoder_masking() -> None:
    from mmbench.data.base import DataInfo

    torch.manual_seed(0)
    info = DataInfo(name="m", task="multilabel", num_classes=3, image_shape=(3, 8, 8),
                    tabular_kind="timeseries", timeseries_channels=5)
    enc = EHRTransformer(EHREncoderConfig(ffn_dim=16, heads=2), info, 8).eval()
    x = torch.randn(3, 6, 5)
    lengths = torch.tensor([6, 2, 0])
    tokens, pooled = enc({"values": x, "lengths": lengths})
    assert tokens.shape == (3, 6, 8) and pooled.shape == (3, 8) and torch.isfinite(tokens).all()
    assert tokens[1, 2:].abs().sum() == 0 and pooled[2].abs().sum() == 0  # padding, empty row
    torch.testing.assert_close(pooled[1], tokens[1, :2].mean(0))  # masked mean over valid steps
    x2 = x.clone()
    x2[1, 2:] = 100.0
    t2, p2 = enc({"values": x2, "lengths": lengths})
    assert torch.equal(p2[1], pooled[1]) and torch.equal(t2[0], tokens[0])
    pair = SharedSpecific(lambda: EHRTransformer(EHREncoderConfig(ffn_dim=16, heads=2), info, 8), "all")
    assert pair.shared.embed is pair.specific.embed and pair.shared.pos is pair.specific.pos
    assert pair.shared.feature is pair.specific.feature  # DrFuse's shared model_feat
    assert pair.shared.layers is not pair.specific.layers


def test_resnet3d_shapes_and_grad() -> None:
    enc = ResNet3DEncoder(ResNet3DConfig(widths=(4, 8, 8, 8)), dim=6, in_chans=1)
    x = torch.randn(2, 1, 32, 32, 32, requires_grad=True)
    tokens, pooled = enc({"pixels": x})
    assert tokens.shape == (2, 1, 6) and pooled.shape == (2, 6)  # 32 -> 16 -> 8 -> 8, 4, 2, 1
    pooled.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    tokens40, _ = enc({"pixels": torch.randn(1, 1, 40, 40, 40)})
    assert tokens40.shape == (1, 8, 6)  # 40 -> 20 -> 10 -> 10, 5, 3, 2: 2^3 tokens


@pytest.mark.slow
def test_resnet3d_monai_impl_matches_layout() -> None:
    pytest.importorskip("monai")
    cfg = ResNet3DConfig(widths=(4, 8, 8, 8), impl="monai")
    enc = ResNet3DEncoder(cfg, dim=6, in_chans=1)
    tokens, pooled = enc({"pixels": torch.randn(1, 1, 40, 40, 40)})
    assert tokens.shape == (1, 8, 6) and pooled.shape == (1, 6)
    names = [n for n, _ in enc.backbone.named_children()]
    assert names == ["conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4"]


def test_absent_modality_never_reaches_late_fusion(root: Path) -> None:
    """Bit-exact leakage check on the time-series and 3-D inputs of the real adapters."""
    from mmbench.encoders.config import EncodersConfig, ImageEncoderConfig
    from mmbench.models.base import BuildContext
    from mmbench.models.late_fusion import LateFusion, LateFusionConfig

    torch.manual_seed(0)
    cases = [(MIMICDataset(MIMICOptions(image_size=16), str(root)),
              EncodersConfig(image=ImageEncoderConfig(), tabular=EHREncoderConfig(ffn_dim=16, heads=2)))]
    if HAS_H5:
        cases.append((ADNIDataset(ADNIOptions(image_size=8), str(root)),
                      EncodersConfig(image=ResNet3DConfig(widths=(4, 4, 4, 4)))))
    for adapter, enc in cases:
        info, sp = adapter.load()
        model = LateFusion(BuildContext(info, enc, 8), LateFusionConfig()).eval()
        split = sp["train"]
        present = split.natural_present.clone()
        present[0] = torch.tensor([True, False])
        present[1] = torch.tensor([False, True])
        idx = torch.arange(4)
        out = model(split.batch(idx, present))
        for mod, row in (("tabular", 0), ("image", 1)):  # change only the absent inputs' raw data
            for arr in split.inputs[mod].values():
                arr[row] = ~arr[row] if arr.dtype == torch.bool else arr[row] + 7
        out2 = model(split.batch(idx, present))
        assert torch.equal(out.logits, out2.logits)
        for mod in ("image", "tabular"):
            assert torch.equal(out.embeddings[mod], out2.embeddings[mod])


# ------------------------------------------------------------------------------------ CLI / e2e
def test_cli_prepare_and_missing_dataset_error(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from mmbench.cli import main

    monkeypatch.setenv("MMBENCH_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "argv", ["mmbench", "prepare", "dvm"])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "Traceback" not in err and "expected" in err and "deepvisualmarketing" in err
    assert len([ln for ln in err.strip().splitlines() if ln.strip()]) <= 4  # one message, maybe wrapped
    monkeypatch.setattr(sys, "argv", ["mmbench", "prepare", "pad-ufes-20", "--data-root", str(root)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code in (0, None)
    out = capsys.readouterr().out
    assert "pad-ufes-20 (adapter pad_ufes): multiclass, 6 classes" in out and "train" in out


#: Every registered dataset adapter -> the dataset cards run on its fixture data (written by
#: ``tests/fixtures_data.py`` in the ``root`` fixture; ``synthetic`` generates its own) with their
#: ``--set`` items. The tests below are parametrized over ``DATASETS.names()``: an adapter missing here
#: fails them (no silent gap in coverage when a new adapter is registered).
TOY_2D = ["encoders.image.name=test_resnet", "data.image_size=16"]
TOY_3D = ["encoders.image.widths=[4,4,4,4]", "data.image_size=16"]
ADAPTER_CARDS: dict[str, dict[str, list[str]]] = {
    "synthetic": {"synthetic-tiny": [*TOY_2D, "data.n_samples=120"], "suite-sanity-tiny": ["data.n_samples=160"]},
    "csv": {"csv-example": TOY_2D, "adni-nifti": TOY_3D},
    "pad_ufes": {"pad-ufes-20": TOY_2D},
    "dvm": {"dvm": TOY_2D},
    "mimic": {"mimic": [*TOY_2D, "encoders.tabular.ffn_dim=16", "encoders.tabular.heads=2", "data.cohort=partial"]},
    "adni": {"adni": [*TOY_3D, "data.split=files"]},
    # the structured suite is generated (no files): its tiny presets, smaller still
    **{f"suite-{task}": {f"suite-{task}-tiny": ["data.n_train=64", "data.n_val=32", "data.n_test=64"]}
       for task in ("parts", "predict", "imbalance", "reliance", "interaction", "shared")},
}
#: optional readers an adapter's fixture needs (a skip names the extra to install)
NEEDS = {"adni": HAS_H5, "adni-nifti": HAS_NIB}
CASES = [(a, c) for a in DATASETS.names() for c in (ADAPTER_CARDS.get(a) or {None: []})]


def _card_sets(adapter: str, card: str | None) -> list[str]:
    if card is None:
        pytest.fail(f"dataset adapter {adapter!r} is registered but has no fixture: write its on-disk layout in "
                    "tests/fixtures_data.py, call the writer in the `root` fixture and add the adapter with a "
                    "dataset card to ADAPTER_CARDS in tests/test_datasets.py")
    if not NEEDS.get(card, True):
        pytest.skip("h5py / nibabel not installed (pip install 'mmbench[medical]')")
    return ADAPTER_CARDS[adapter][card]


@pytest.mark.parametrize("adapter", DATASETS.names())
def test_every_registered_adapter_has_fixture_data(adapter: str) -> None:
    assert ADAPTER_CARDS.get(adapter), (
        f"dataset adapter {adapter!r} has no fixture data: add a writer to tests/fixtures_data.py, call it in the "
        "`root` fixture, and list the adapter with a dataset card in ADAPTER_CARDS (tests/test_datasets.py)")
    for card in ADAPTER_CARDS[adapter]:
        assert load_dataset(card).adapter == adapter, f"card {card!r} does not use adapter {adapter!r}"


@pytest.mark.parametrize(("adapter", "card"), CASES)
def test_adapter_gives_three_consistent_splits(root: Path, adapter: str, card: str | None) -> None:
    """Each adapter, on its fixture: three non-empty splits whose inputs, labels and presence agree in
    length, dtype and trailing shape with each other and with the :class:`DataInfo`, and batches that
    zero every absent input."""
    sets = _card_sets(adapter, card)
    spec = resolve("late_fusion", card, MissingSpec("none"), 0, overrides=parse_set(sets))
    info, splits = build_adapter(spec, str(root)).load()
    assert set(splits) == set(SPLITS)
    assert info.num_classes >= 2 and len(info.class_names) in (0, info.num_classes)
    first = splits["train"]
    for name, sp in splits.items():
        n = len(sp)
        assert n > 0, f"{card}: empty {name} split"
        assert sp.natural_present.shape == (n, len(MODALITIES)) and sp.natural_present.dtype == torch.bool
        assert sp.natural_present.any(dim=1).all(), f"{card}: {name} keeps rows with no modality"
        if info.task == "multilabel":
            assert sp.y.shape == (n, info.num_classes) and set(sp.y.unique().tolist()) <= {0.0, 1.0}
        else:
            assert sp.y.shape == (n,) and sp.y.dtype == torch.long
            assert 0 <= int(sp.y.min()) and int(sp.y.max()) < info.num_classes
        assert set(sp.inputs) == set(MODALITIES), f"{card}: {name} inputs {sorted(sp.inputs)}"
        for m in MODALITIES:
            assert set(sp.inputs[m]) == set(first.inputs[m]), f"{card}: {name}/{m} keys differ from train"
            for key, arr in sp.inputs[m].items():
                ref = first.inputs[m][key]
                assert arr.shape[0] == n, f"{card}: {name}/{m}/{key} has {arr.shape[0]} rows, the split {n}"
                assert arr.shape[1:] == ref.shape[1:] and arr.dtype == ref.dtype, f"{card}: {name}/{m}/{key}"
        assert tuple(sp.inputs["image"]["pixels"].shape[1:]) == tuple(info.image_shape)
        tab = sp.inputs["tabular"]
        if info.tabular_kind == "timeseries":
            assert tab["values"].shape[-1] == info.timeseries_channels
        else:
            schema = info.tabular
            assert schema is not None
            assert (tab["cat"].shape[1] if "cat" in tab else 0) == len(schema.cat_cardinalities)
            assert (tab["num"].shape[1] if "num" in tab else 0) == schema.n_num
            for j, card_j in enumerate(schema.cat_cardinalities):
                assert int(tab["cat"][:, j].max()) < card_j, f"{card}: {name} categorical column {j} out of range"
        b = sp.batch(torch.arange(min(n, 8)), sp.natural_present)
        for j, m in enumerate(MODALITIES):
            for key, t in b.inputs[m].items():
                absent = t[~b.present[:, j]]
                assert not absent.any(), f"{card}: {name}/{m}/{key} is not zero where absent"
    assert first.natural_present.any(dim=0).all(), f"{card}: a modality is absent from every training row"


@pytest.mark.parametrize("method", ["late_fusion", "dfpl"])
@pytest.mark.parametrize(("adapter", "card"), CASES)
def test_end_to_end_run(root: Path, tmp_path: Path, adapter: str, card: str | None, method: str) -> None:
    import json

    from typer.testing import CliRunner

    from mmbench.cli import app

    sets = ["train.epochs=1", "hidden=16", "train.batch_size=8", "train.device=cpu", "train.num_threads=1",
            "train.amp=false", *_card_sets(adapter, card)]
    args = ["run", "--method", method, "--dataset", card, "--data-root", str(root), "--scenario", "both",
            "--rate", "0.5", "--seeds", "0", "-o", str(tmp_path / "results")]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert f"ok {method} on {card}" in res.output
    [record] = [json.loads(f.read_text()) for f in (tmp_path / "results" / card / method).glob("*.json")]
    assert record["status"] == "ok" and record["spec"]["dataset"]["adapter"] == adapter
    fp = record["data_fingerprint"]  # the fingerprint of the data the run was trained on (None: generated)
    if adapter == "synthetic" or adapter.startswith("suite-"):  # generated, no files
        assert fp is None
    else:
        assert set(fp) == {"files", "image_counts", "digest"} and any(v is not None for v in fp["files"].values())
