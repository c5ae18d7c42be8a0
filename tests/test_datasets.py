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

from mmbench.data.adni import ADNIDataset, ADNIOptions, indicator_target
from mmbench.data.cache import cache_key, read_cache
from mmbench.data.csv import CSVDataset, CSVOptions
from mmbench.data.dvm import DVMDataset, DVMOptions
from mmbench.data.mimic import (
    CHANNELS,
    Discretizer,
    MIMICDataset,
    MIMICOptions,
    normalize_episode,
    select_cxr,
)
from mmbench.data.pad_ufes import PADUFESDataset, PADUFESOptions
from mmbench.data.prepare import prepare_report
from mmbench.data.table import encode_features, random_split
from mmbench.encoders.build import SharedSpecific
from mmbench.encoders.ehr import EHREncoderConfig, EHRTransformer
from mmbench.encoders.image3d import ResNet3DConfig, ResNet3DEncoder
from mmbench.errors import DataError
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
    # the .pt paths point at another machine: re-rooted under <dir>/resized_DVM, all decoded
    assert all(sp[s].natural_present.all() for s in sp)
    features = pd.read_csv(facts["dir"] / "features" /
                           "dvm_features_val_noOH_all_views_physical_jittered_50_reordered.csv", header=None)
    assert torch.equal(sp["val"].inputs["tabular"]["cat"], torch.tensor(features.iloc[:, :4].to_numpy()))


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
    name = "dvm_features_test_noOH_all_views_physical_jittered_50_reordered.csv"
    test = pd.read_csv(feats / name, header=None)
    # physical columns (4..7) are z-scored within the split (TIP): mean 0, sample std 1
    assert np.allclose(test.iloc[:, 4:8].mean(), 0, atol=1e-6) and np.allclose(test.iloc[:, 4:8].std(), 1)
    info, sp = a.load()
    assert all(sp[s].natural_present.all() for s in sp)


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
    # periods [60, 30.5, 48, 12.25][k % 4] capped at 48 h -> 48, 31, 48, 13 hourly bins
    assert tr.inputs["tabular"]["lengths"][:4].tolist() == [48, 31, 48, 13]
    assert tr.inputs["tabular"]["values"][1, 31:].abs().sum() == 0  # zero padding
    # paired stays: k % 4 in (0, 1); the first one's JPG is 0 bytes -> 8 - 1 images in train
    assert tr.natural_present[:, 0].tolist() == [k % 4 in (0, 1) and k != 0 for k in range(16)]
    assert tr.natural_present[:, 1].all()
    paired = MIMICDataset(MIMICOptions(image_size=16, cohort="paired"), str(root))
    rep = paired.prepare()
    # global stay index k: train 0-15, val 16-21, test 22-29; paired when k % 4 in (0, 1)
    assert [rep["splits"][s]["n"] for s in ("train", "val", "test")] == [8, 4, 4]
    assert len(facts["expected_dicom"]) == 16


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
    assert meta["version"] == 1 and not Path(f"{first['cache']}.tmp-{os.getpid()}").exists()
    assert prepare_report(a, progress=False).count("\n") > 5


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
    assert "pad_ufes: multiclass, 6 classes" in out and "train" in out


E2E = {
    "csv-example": [],
    "pad-ufes-20": [],
    "dvm": [],
    "mimic": ["encoders.tabular.ffn_dim=16", "encoders.tabular.heads=2", "data.cohort=partial"],
    "adni": ["encoders.image.widths=[4,4,4,4]", "data.image_size=16", "data.split=files"],
    "adni-nifti": ["encoders.image.widths=[4,4,4,4]", "data.image_size=16"],
}


@pytest.mark.parametrize("method", ["late_fusion", "dfpl"])
@pytest.mark.parametrize("dataset", list(E2E))
def test_end_to_end_run(root: Path, tmp_path: Path, dataset: str, method: str) -> None:
    from mmbench.registry import METHODS

    if method not in METHODS:
        pytest.skip(f"method {method!r} not registered yet")
    if (dataset == "adni" and not HAS_H5) or (dataset == "adni-nifti" and not HAS_NIB):
        pytest.skip("h5py / nibabel not installed")
    from typer.testing import CliRunner

    from mmbench.cli import app

    image = [] if dataset.startswith("adni") else ["encoders.image.name=test_resnet", "data.image_size=16"]
    sets = ["train.epochs=1", "hidden=16", "train.batch_size=8", "train.device=cpu", "train.num_threads=1",
            "train.amp=false", *image, *E2E[dataset]]
    args = ["run", "--method", method, "--dataset", dataset, "--data-root", str(root), "--scenario", "both",
            "--rate", "0.5", "--seeds", "0", "-o", str(tmp_path / "results")]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert f"ok {method} on {dataset}" in res.output
