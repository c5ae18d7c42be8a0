"""Ground-truth diagnostics: what a method's embeddings encode about the dataset's true latent factors.

Where a dataset knows the latent factors behind each row (the synthetic suite puts them in
``split.extra["latents"]``), a trained method's embeddings on the test split are probed linearly: for
each feature group the method exposes (:meth:`~mmbench.models.base.Method.probe_features`, e.g.
``image.shared`` / ``image.specific`` for a disentangling method, or one pooled embedding per modality)
and each latent factor, the cross-validated R² of a ridge regression (scikit-learn; standardised
features; 5 folds over held-out rows) from the features to the factor. A factor with few discrete
values is probed through its one-hot indicators (the R² averaged over them), a continuous factor
directly. A group is probed only on the rows where its modality is present.

A method that claims to separate shared from modality-specific information (DrFuse, ShaSpec, DFPL)
should show it here: the shared factor high from the shared branches and low from the specific ones,
and the reverse for each modality's own factor.
"""

from __future__ import annotations

import numpy as np
import torch

from .core import MODALITIES
from .pipeline import Pipeline
from .train import Loader

#: Rows the probes use at most (the first rows of the test split, in order).
MAX_ROWS = 4000
#: A latent with at most this many distinct values is probed through its one-hot indicators.
MAX_CATEGORIES = 32


@torch.no_grad()
def collect(pipeline: Pipeline, loader: Loader, max_rows: int = MAX_ROWS) -> tuple[dict[str, np.ndarray],
                                                                                 np.ndarray, np.ndarray]:
    """Probe features of the first ``max_rows`` rows of ``loader``: (group -> N x D, presence, row index)."""
    pipeline.eval()
    feats: dict[str, list[np.ndarray]] = {}
    pres, idx, seen = [], [], 0
    for batch in loader:
        out = pipeline(batch)
        for name, t in pipeline.method.probe_features(out).items():
            feats.setdefault(name, []).append(t.detach().float().cpu().reshape(len(batch), -1).numpy())
        pres.append(batch.present.cpu().numpy())
        idx.append(batch.index.cpu().numpy())
        seen += len(batch)
        if seen >= max_rows:
            break
    cut = slice(0, max_rows)
    return ({k: np.concatenate(v)[cut] for k, v in feats.items()}, np.concatenate(pres)[cut],
            np.concatenate(idx)[cut])


def _targets(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    levels = np.unique(values)
    if (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.bool_)) \
            and len(levels) <= MAX_CATEGORIES:
        return (values[:, None] == levels[None, :]).astype(float)
    return values.astype(float).reshape(len(values), -1)


def linear_probe_r2(x: np.ndarray, target: np.ndarray, folds: int = 5, seed: int = 0) -> float | None:
    """Cross-validated R² (ridge on standardised features) of ``target`` from ``x``; None if undefined."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = _targets(target)
    keep = y.std(axis=0) > 0
    if len(x) < 2 * folds or not keep.any():
        return None
    y = y[:, keep]
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    pred = cross_val_predict(model, x, y, cv=KFold(folds, shuffle=True, random_state=seed))
    pred = pred.reshape(y.shape)
    ss_res = ((y - pred) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    return float(np.mean(1.0 - ss_res / ss_tot))


def probe(features: dict[str, np.ndarray], present: np.ndarray, index: np.ndarray,
          latents: dict[str, np.ndarray]) -> dict[str, dict[str, float | None]]:
    """R² of every latent factor from every feature group (on the rows where the group's modality is present)."""
    out: dict[str, dict[str, float | None]] = {}
    for group, x in features.items():
        modality = group.split(".")[0]
        rows = present[:, MODALITIES.index(modality)] if modality in MODALITIES else np.ones(len(x), bool)
        out[group] = {name: linear_probe_r2(x[rows], np.asarray(values)[index[rows]])
                      for name, values in latents.items()}
    return out
