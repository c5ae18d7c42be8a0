"""Fixture generators: each real dataset's on-disk layout at toy size (a few dozen samples).

Every writer takes a data root, writes ``<root>/<dataset dir>/...`` exactly as the official
download or the standard preprocessing lays it out, and returns a dict of facts the tests check
(counts, deliberately broken files, ...). Images are tiny and non-square so resizing is exercised.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image


def _png(path: Path, rng: np.random.Generator, size: tuple[int, int] = (20, 14), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def _jpg(path: Path, rng: np.random.Generator, size: tuple[int, int] = (24, 18)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8), "L").save(path, "JPEG")


# ------------------------------------------------------------------------------------------ csv
def write_csv_dataset(root: Path, dirname: str = "csv-example", n: int = 30, seed: int = 0) -> dict[str, Any]:
    """``<root>/<dirname>/samples.csv`` + ``images/``: 3 classes, split column, natural gaps.

    Row 0: empty image path; row 1: 0-byte image; row 2: unreadable image; row 3: path to a missing
    file; row 4: every feature cell empty; row 5: no label (dropped); rows 6-7: some empty cells.
    """
    rng = np.random.default_rng(seed)
    base = root / dirname
    rows = []
    for i in range(n):
        rel = f"images/img_{i:03d}.png"
        _png(base / rel, rng)
        rows.append(
            {
                "sample": f"s{i}",
                "path": rel,
                "diagnosis": ["benign", "malignant", "other"][i % 3],
                "sex": ["F", "M"][i % 2],
                "site": ["arm", "leg", "face"][(i // 2) % 3],
                "age": float(20 + i),
                "size_mm": float(rng.uniform(1, 9)),
                "fold": "train" if i % 5 in (0, 1, 2) else ("val" if i % 5 == 3 else "test"),
                "patient": f"p{i // 2}",
                "leaky": i % 3,
            }
        )
    rows[0]["path"] = ""
    (base / rows[1]["path"]).write_bytes(b"")
    (base / rows[2]["path"]).write_bytes(b"this is not a png")
    rows[3]["path"] = "images/does_not_exist.png"
    for k in ("sex", "site", "age", "size_mm"):
        rows[4][k] = ""
    rows[5]["diagnosis"] = ""
    rows[6]["sex"] = ""
    rows[7]["age"] = ""
    df = pd.DataFrame(rows)
    df.to_csv(base / "samples.csv", index=False)
    labelled = [r for r in rows if r["diagnosis"]]
    counts = {s: sum(r["fold"] == s for r in labelled) for s in ("train", "val", "test")}
    return {
        "dir": base,
        "n_rows": n,
        "labelled": len(labelled),
        "split_counts": counts,
        "image_absent_rows": ["s0", "s1", "s2", "s3"],
        "tabular_absent_rows": ["s4"],
    }


# ------------------------------------------------------------------------------------ pad-ufes
PAD_COLUMNS = [
    "patient_id",
    "lesion_id",
    "smoke",
    "drink",
    "background_father",
    "background_mother",
    "age",
    "pesticide",
    "gender",
    "skin_cancer_history",
    "cancer_history",
    "has_piped_water",
    "has_sewage_system",
    "fitspatrick",
    "region",
    "diameter_1",
    "diameter_2",
    "diagnostic",
    "itch",
    "grew",
    "hurt",
    "changed",
    "bleed",
    "elevation",
    "img_id",
    "biopsed",
]


def write_pad_ufes(root: Path, n_patients: int = 18, seed: int = 0) -> dict[str, Any]:
    """``<root>/pad-ufes-20/metadata.csv`` + ``images/imgs_part_{1,2,3}/``; 2 images per patient."""
    rng = np.random.default_rng(seed)
    base = root / "pad-ufes-20"
    classes = ["ACK", "BCC", "MEL", "NEV", "SCC", "SEK"]
    rows = []
    k = 0
    for p in range(n_patients):
        for j in range(2):
            img_id = f"PAT_{p}_{100 + k}_{j}.png"
            part = f"imgs_part_{k % 3 + 1}"
            _png(base / "images" / part / img_id, rng, (26, 20))
            tf = ["True", "False"]
            row = {
                "patient_id": f"PAT_{p}",
                "lesion_id": 100 + k,
                "smoke": tf[k % 2],
                "drink": tf[(k + 1) % 2],
                "background_father": ["POMERANIA", "GERMANY", "UNK"][k % 3],
                "background_mother": "ITALY",
                "age": 30 + p,
                "pesticide": tf[k % 2],
                "gender": ["FEMALE", "MALE"][p % 2],
                "skin_cancer_history": tf[p % 2],
                "cancer_history": tf[(p + 1) % 2],
                "has_piped_water": "True",
                "has_sewage_system": "False",
                "fitspatrick": float(1 + k % 6),
                "region": ["NECK", "ARM"][k % 2],
                "diameter_1": float(5 + k % 4),
                "diameter_2": float(4 + k % 3),
                "diagnostic": classes[k % 6],
                "itch": tf[k % 2],
                "grew": ["True", "False", "UNK"][k % 3],
                "hurt": "False",
                "changed": "UNK",
                "bleed": tf[k % 2],
                "elevation": tf[(k + 1) % 2],
                "img_id": img_id,
                "biopsed": "True" if classes[k % 6] in ("BCC", "SCC", "MEL") else "False",
            }
            if k % 4 == 0:  # the questionnaire part left empty, as for many PAD-UFES-20 patients
                for c in (
                    "smoke",
                    "drink",
                    "background_father",
                    "background_mother",
                    "pesticide",
                    "skin_cancer_history",
                    "cancer_history",
                    "has_piped_water",
                    "has_sewage_system",
                    "fitspatrick",
                    "diameter_1",
                    "diameter_2",
                ):
                    row[c] = ""
            rows.append(row)
            k += 1
    pd.DataFrame(rows, columns=PAD_COLUMNS).to_csv(base / "metadata.csv", index=False)
    return {"dir": base, "n": len(rows), "patients": n_patients}


# ----------------------------------------------------------------------------------------- DVM
DVM_COLORS = ["Black", "Blue", "Red", "Silver", "White"]
#: (maker, model) per class: DVM's names hold spaces and hyphens (folder names too)
DVM_MODELS = [("Land Rover", "Range Rover Sport"), ("Maker1", "Model1"), ("Mercedes-Benz", "C Class"),
              ("Maker3", "Model3")]
#: TIP's column order -> MMCL's (``..._physical_jittered_50.csv``): the 13 continuous columns, then the 4 codes
MMCL_ORDER = list(range(4, 17)) + [0, 1, 2, 3]


def write_dvm_features(
    root: Path, n: tuple[int, int, int] = (24, 8, 12), n_classes: int = 4, seed: int = 0,
    dirname: str = "dvm", layout: str = "tip",
) -> dict[str, Any]:
    """TIP's ``features/`` files + ``resized_DVM/`` images, with the official details.

    Categorical codes are written as integers (pandas writes the notebook's ``cat.codes`` so), image
    names hold spaces (``Land Rover$$Range Rover Sport$$...``), and the ``.pt`` paths are of three
    kinds: row ``i % 3 == 0`` valid on this machine under ``<dir>/resized_DVM`` (TIP run here), ``1``
    from another machine (re-rooted), ``2`` valid on this machine but outside ``resized_DVM/`` (used
    as they are; re-rooting would miss them). ``layout="mmcl"`` writes MMCL's files instead
    (``..._physical_jittered_50.csv`` in :data:`MMCL_ORDER`, ``tabular_lengths_all_views_physical.pt``)
    with the same values as ``layout="tip"`` for the same seed.
    """
    rng = np.random.default_rng(seed)
    base = root / dirname
    elsewhere = root / f"{dirname}-images-elsewhere"
    feats = base / "features"
    feats.mkdir(parents=True, exist_ok=True)
    lengths = [5, 4, 3, 6] + [1] * 13
    suffix = "_reordered" if layout == "tip" else ""
    for split, m in zip(("train", "val", "test"), n, strict=False):
        cat = pd.DataFrame(np.stack([rng.integers(0, c, m) for c in lengths[:4]], axis=1))
        num = pd.DataFrame(rng.standard_normal((m, 13)).round(6), columns=range(4, 17))
        frame = pd.concat([cat, num], axis=1)
        if layout == "mmcl":
            frame = frame.iloc[:, MMCL_ORDER]
        frame.to_csv(feats / f"dvm_features_{split}_noOH_all_views_physical_jittered_50{suffix}.csv",
                     index=False, header=False)
        labels = [int(i % n_classes) for i in range(m)]
        paths = []
        for i in range(m):
            maker, model = DVM_MODELS[labels[i] % len(DVM_MODELS)]
            name = f"{maker}$${model}$$2017$$Blue$${labels[i]}_1$${split}{i}$$image_0.jpg"
            rel = Path("resized_DVM", *name.split("$$")[:4], name)
            img = rng.integers(0, 256, (18, 24, 3), dtype=np.uint8)
            target = (elsewhere if i % 3 == 2 else base) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(target, "JPEG")
            paths.append(str(target) if i % 3 != 1 else f"/bigdata/someone/data/DVM/{rel.as_posix()}")
        torch.save(labels, feats / f"labels_model_all_{split}_all_views.pt")
        # MMCL's notebook names the paths file after the machine it ran on (``_server`` / ``_tower``)
        torch.save(paths, feats / f"{split}_paths_all_views{'_server' if layout == 'mmcl' else ''}.pt")
    if layout == "mmcl":
        torch.save([lengths[j] for j in MMCL_ORDER], feats / "tabular_lengths_all_views_physical.pt")
    else:
        torch.save(lengths, feats / "tabular_lengths_all_views_physical_reordered.pt")
    return {"dir": base, "n": n, "classes": n_classes, "lengths": lengths, "elsewhere": elsewhere}


def write_dvm_raw(
    root: Path, dirname: str = "dvm-raw", models: int = 3, per_model: int = 12, seed: int = 0
) -> dict[str, Any]:
    """The raw release: ``tables_V2.0/`` (Ad, Image, Price, 'Ad_table (extra)') + ``resized_DVM/``.

    Model ``m`` has ``per_model`` adverts, plus a model with only 2 adverts (filtered by min_adverts)
    and one advert whose price row is missing (dropped by the join).
    """
    rng = np.random.default_rng(seed)
    base = root / dirname
    tables = base / "tables_V2.0"
    tables.mkdir(parents=True, exist_ok=True)
    ad, image, price, extra = [], [], [], []
    specs = [(f"{m + 1}_1", *DVM_MODELS[m % len(DVM_MODELS)], per_model) for m in range(models)]
    specs.append(("9_9", "Rare", "Small", 2))
    for gid, maker, model, count in specs:
        for year in (2015, 2016):
            price.append(
                {
                    "Maker": maker,
                    " Genmodel": model,
                    " Genmodel_ID": gid,
                    " Year": year,
                    " Entry_price": 10000 + 1000 * int(gid.split("_")[0]) + year,
                }
            )
        for a in range(count):
            adv = f"{gid}$${a + 1}"
            reg = 2015 + a % 2
            ad.append(
                {
                    "Maker": maker,
                    " Genmodel": model,
                    " Genmodel_ID": gid,
                    "Adv_ID": adv,
                    "Adv_year": 2018,
                    "Adv_month": 1 + a % 12,
                    "Color": DVM_COLORS[a % 5],
                    "Reg_year": float(reg),
                    "Bodytype": ["Saloon", "Hatchback"][a % 2],
                    "Runned_Miles": str(10000 + 137 * a),
                    "Engin_size": f"{1.0 + 0.2 * (a % 3):.1f}L",
                    "Gearbox": ["Manual", "Automatic"][a % 2],
                    "Fuel_type": ["Petrol", "Diesel"][a % 2],
                    "Price": str(5000 + 10 * a),
                    "Seat_num": float(4 + a % 3),
                    "Door_num": float(3 + a % 2),
                }
            )
            for v in range(2):  # two photos per advert: the first one is used
                name = f"{maker}$${model}$${reg}$${DVM_COLORS[a % 5]}$${gid}$${a + 1}$$image_{v}.jpg"
                image.append(
                    {
                        "Genmodel_ID": gid,
                        " Image_ID": f"{adv}$${v}",
                        " Image_name": name,
                        " Predicted_viewpoint": 0,
                        " Quality_check": "P",
                    }
                )
                if v == 0:
                    _jpg(base / "resized_DVM" / maker / model / str(reg) / DVM_COLORS[a % 5] / name, rng)
            extra.append(
                {
                    "Maker": maker,
                    " Genmodel": model,
                    " Genmodel_ID": gid,
                    "Adv_ID": adv,
                    "Wheelbase": 2500.0 + 10 * int(gid.split("_")[0]) if a != 1 else np.nan,
                    "Height": 1400.0 + a,
                    "Width": 1800.0,
                    "Length": 4000.0 + a,
                }
            )
    ad.append(
        {**ad[0], "Adv_ID": "1_1$$999", "Reg_year": 1999.0}
    )  # no price row for 1999: dropped by the join
    pd.DataFrame(ad).to_csv(tables / "Ad_table.csv", index=False)
    pd.DataFrame(image).to_csv(tables / "Image_table.csv", index=False)
    pd.DataFrame(price).to_csv(tables / "Price_table.csv", index=False)
    pd.DataFrame(extra).to_csv(tables / "Ad_table (extra).csv", index=False)
    return {"dir": base, "models": models, "per_model": per_model}


# --------------------------------------------------------------------------------------- MIMIC
#: MedFuse's normaliser file name (mimic3-benchmarks ``Normalizer.save_params``: a protocol-2 pickle)
MIMIC_NORMALIZER = "ph_ts1.0.input_str:previous.start_time:zero.normalizer"
#: every episode's last row (at hour ``period_length``) has this heart rate
LAST_HEART_RATE = "101.0"
#: the normaliser's heart-rate mean and std: the last row normalises to (101 - 80) / 7 = 3
HR_MEAN, HR_STD = 80.0, 7.0
#: full-precision length of stay (hours) by ``k % 4``; list files round them to 6 decimals (12.2500004
#: and 30.5166664 round down, so the last row lies up to 5e-7 h past ``period_length``)
MIMIC_LOS = (60.0, 30.5166664, 48.0, 12.2500004)


def _episode(rng: np.random.Generator, los: float) -> pd.DataFrame:
    from mmbench.data.mimic import CHANNELS, LEVELS

    times = [*np.sort(rng.uniform(0, los, size=5)).round(2), los]  # the last row at the end of the stay
    rows = []
    for t in times:
        row = {"Hours": t}
        for ch in CHANNELS:
            if rng.random() < 0.5:
                row[ch] = ""
            elif ch in LEVELS:
                row[ch] = LEVELS[ch][int(rng.integers(len(LEVELS[ch])))]
            else:
                row[ch] = f"{rng.normal(80, 20):.1f}"
        rows.append(row)
    rows[-1]["Heart Rate"] = LAST_HEART_RATE
    return pd.DataFrame(rows, columns=["Hours", *CHANNELS])


def write_mimic(root: Path, n: tuple[int, int, int] = (16, 6, 8), seed: int = 0) -> dict[str, Any]:
    """MedFuse's mimic4extract output + MIMIC-CXR-JPG metadata, resized JPGs and normaliser pickle.

    Stay ``k`` (global index) belongs to subject ``10000 + k // 2`` (two ICU episodes per subject,
    ``{subject}_episode{1,2}_timeseries.csv``, admitted 3 days apart), is admitted at 05:30 + 3k days
    and lasts :data:`MIMIC_LOS` ``[k % 4]`` hours (list files: ``period_length`` to 6 decimals, the
    episode's last row at that hour). X-rays: ``k % 4 == 0``: AP at +5 h, plus a later study (+6 h)
    with an empty ViewPosition; ``1``: AP at 00:45:10 and at 03:00:00 the next morning (StudyTime
    ``4510.125`` and ``30000.125``; read without zero padding the first becomes 04:51:00, the latest);
    ``2``: PA at +3 h and AP 6 h *before* admission; ``3``: AP after 48 h. So only
    ``k % 4 in (0, 1)`` are paired. JPGs are flat grayscale ``resized/<dicom_id>.jpg`` (MedFuse's resize.py), a few under ``resized/files/``.
    The first paired train stay's JPG is 0 bytes (image naturally absent although selected).
    """
    from mmbench.data.mimic import CHANNELS, Discretizer

    rng = np.random.default_rng(seed)
    base = root / "mimic"
    ehr, cxr = base / "ehr", base / "cxr"
    (ehr / "root").mkdir(parents=True, exist_ok=True)
    labels = [f"Phenotype {j}" for j in range(25)]
    stays, meta, expected_dicom, subjects = [], [], {}, {}
    k = 0
    for split, m in zip(("train", "val", "test"), n, strict=False):
        folder = ehr / "phenotyping" / ("test" if split == "test" else "train")
        folder.mkdir(parents=True, exist_ok=True)
        lst = []
        for _ in range(m):
            subject, stay_id = 10000 + k // 2, 30000 + k
            name = f"{subject}_episode{k % 2 + 1}_timeseries.csv"
            los = MIMIC_LOS[k % 4]
            _episode(rng, los).to_csv(folder / name, index=False)
            intime = pd.Timestamp("2150-01-01 05:30:00") + pd.Timedelta(days=3 * k)
            stays.append(
                {
                    "subject_id": subject,
                    "hadm_id": 20000 + k,
                    "stay_id": stay_id,
                    "intime": str(intime),
                    "outtime": str((intime + pd.Timedelta(hours=los)).floor("s")),  # MIMIC-IV: whole seconds
                }
            )
            subjects[stay_id] = subject
            y = (rng.random(25) < 0.3).astype(int)
            y[k % 25] = 1
            lst.append(
                {
                    "stay": name,
                    "period_length": round(los, 6),
                    "stay_id": stay_id,
                    **dict(zip(labels, y, strict=False)),
                }
            )

            def study(dicom: str, when: pd.Timestamp, view: str, subject: int = subject) -> None:
                meta.append(
                    {
                        "dicom_id": dicom,
                        "subject_id": subject,
                        "study_id": 50000 + len(meta),
                        "PerformedProcedureStepDescription": "CHEST",
                        "ViewPosition": view,
                        "Rows": 18,
                        "Columns": 24,
                        "StudyDate": int(when.strftime("%Y%m%d")),
                        "StudyTime": float(when.strftime("%H%M%S")) + 0.125,
                    }
                )
                nested = len(meta) % 5 == 0  # MIMIC-CXR-JPG's own files/p1x/p1xxxxxx/sxxx/ layout
                sub = Path("files", f"p{subject // 1000}", f"p{subject}", f"s{50000 + len(meta)}") if nested else Path()
                _jpg(cxr / "resized" / sub / f"{dicom}.jpg", rng)

            day2 = intime.normalize() + pd.Timedelta(days=1)
            if k % 4 == 0:
                study(f"d{k}a", intime + pd.Timedelta(hours=5), "AP")
                study(f"d{k}x", intime + pd.Timedelta(hours=6), "")
                expected_dicom[stay_id] = f"d{k}a"
            elif k % 4 == 1:
                study(f"d{k}a", day2 + pd.Timedelta(minutes=45, seconds=10), "AP")
                study(f"d{k}b", day2 + pd.Timedelta(hours=3), "AP")
                expected_dicom[stay_id] = f"d{k}b"
            elif k % 4 == 2:
                study(f"d{k}a", intime + pd.Timedelta(hours=3), "PA")
                study(f"d{k}p", intime - pd.Timedelta(hours=6), "AP")
            else:
                study(f"d{k}a", intime + pd.Timedelta(hours=50), "AP")
            k += 1
        pd.DataFrame(lst).to_csv(ehr / "phenotyping" / f"{split}_listfile.csv", index=False, float_format="%.6f")
    pd.DataFrame(stays).to_csv(ehr / "root" / "all_stays.csv", index=False)
    pd.DataFrame(meta).to_csv(cxr / "mimic-cxr-2.0.0-metadata.csv", index=False)
    broken = next(iter(expected_dicom.values()))
    next((cxr / "resized").rglob(f"{broken}.jpg")).write_bytes(b"")
    disc = Discretizer()
    means, stds = np.zeros(disc.width), np.ones(disc.width)
    hr = disc.header.index("Heart Rate")
    means[hr], stds[hr] = HR_MEAN, HR_STD
    with open(base / MIMIC_NORMALIZER, "wb") as f:
        pickle.dump({"means": means, "stds": stds}, f, protocol=2)
    return {
        "dir": base,
        "n": n,
        "expected_dicom": expected_dicom,
        "subjects": subjects,
        "broken": broken,
        "channels": len(CHANNELS),
        "normalizer": MIMIC_NORMALIZER,
    }


# ---------------------------------------------------------------------------------------- ADNI
ADNI_COLUMNS = [
    "AGE",
    "C(PTGENDER)[T.Male]",
    "PTEDUCAT",
    "ABETA",
    "C(ABETA_MISSING)[T.1]",
    "TAU",
    "C(TAU_MISSING)[T.1]",
    "MMSE",
]


def write_adni_h5(
    root: Path, per_split: tuple[int, int, int] = (12, 6, 6), vol: int = 10, seed: int = 0
) -> dict[str, Any]:
    """DAFT's HDF5 layout: ``0-train.h5``, ``0-valid.h5``, ``0-test.h5`` under ``<root>/adni``."""
    import h5py

    rng = np.random.default_rng(seed)
    base = root / "adni"
    base.mkdir(parents=True, exist_ok=True)
    dx = ["CN", "MCI", "Dementia"]
    k = 0
    for fname, m in zip(("0-train.h5", "0-valid.h5", "0-test.h5"), per_split, strict=False):
        with h5py.File(base / fname, "w") as hf:
            for _ in range(m):
                g = hf.create_group(f"{1000 + k}")
                g.attrs["RID"] = 100 + k // 2  # two visits per subject
                g.attrs["VISCODE"] = ["bl", "m12"][k % 2]
                g.attrs["DX"] = dx[k % 3]
                g.create_dataset(
                    "Left-Hippocampus/vol_with_bg", data=rng.integers(0, 255, (vol, vol, vol), dtype=np.uint8)
                )
                abeta_missing = k % 3 == 0
                tab = [
                    70 + k,
                    k % 2,
                    16,
                    0.0 if abeta_missing else 900.0 + k,
                    float(abeta_missing),
                    250.0 + k,
                    0.0,
                    28 - k % 5,
                ]
                g.create_dataset("tabular", data=np.asarray(tab, dtype=np.float32))
                k += 1
            st = hf.create_group("stats/tabular")
            st.create_dataset("columns", data=np.asarray(ADNI_COLUMNS, dtype="S"))
            st.create_dataset("mean", data=np.zeros(len(ADNI_COLUMNS)))
            st.create_dataset("stddev", data=np.ones(len(ADNI_COLUMNS)))
    return {"dir": base, "per_split": per_split, "columns": ADNI_COLUMNS}


def write_adni_nifti(root: Path, n: int = 18, vol: int = 12, seed: int = 0) -> dict[str, Any]:
    """NIfTI volumes + an ADNIMERGE-style CSV for the generic adapter (``datasets/adni-nifti.yaml``)."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    base = root / "adni-nifti"
    (base / "mri").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rel = f"mri/sub-{i:03d}_T1w.nii.gz"
        img = nib.Nifti1Image(rng.normal(100, 20, (vol, vol + 2, vol - 1)).astype(np.float32), np.eye(4))
        nib.save(img, str(base / rel))
        rows.append(
            {
                "PTID": f"S_{i // 2:03d}",
                "image": rel,
                "DX": ["CN", "MCI", "Dementia"][i % 3],
                "AGE": 60 + i,
                "PTGENDER": ["Male", "Female"][i % 2],
                "PTEDUCAT": 12 + i % 6,
                "APOE4": i % 3,
                "MMSE": 30 - i % 7,
                "ABETA": "" if i % 4 == 0 else 800 + i,
            }
        )
    with gzip.open(base / "mri" / "corrupt_T1w.nii.gz", "wb") as f:
        f.write(b"not a nifti")
    rows[1]["image"] = "mri/corrupt_T1w.nii.gz"
    pd.DataFrame(rows).to_csv(base / "adnimerge.csv", index=False)
    return {"dir": base, "n": n}
