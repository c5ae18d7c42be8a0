"""Validity contrasts of the structured synthetic suite: each task must separate two designed read-outs.

For every knob, two simple models that differ only in whether they can use the structure the task was
built with, trained on the task's training split and scored on its test split (nothing is tuned on
test rows). ``docs/synthetic-suite.md`` reports the numbers; ``tests/test_synthetic_suite.py`` asserts
the gaps and that both sides stay at or below the Bayes ceiling. ``python -m
mmbench.data.suite_validity`` prints every contrast.

* parts: mean-pooled vs one-query attention read-out over the same 8x8-px cell tokens (image only).
* predict: factor heads fitted on complete rows, scored on table-only rows with the image input
  zero-filled vs imputed from the table (``E[one-hot(a) | b]`` fitted on complete training rows).
* imbalance: what the image adds to the table vs what the table adds to the image (exact Bayes).
* reliance: modality gates over per-modality class evidence, one gate for all classes vs one per class.
* interaction: additive logistic regression vs one with cross-modal product features (complete rows).
* shared: the Bayes rule from one image token of the shared factor (a one-to-one match) vs from all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize
from sklearn.linear_model import LinearRegression, LogisticRegression
from torch import nn

from ..registry import DATASETS
from .suite_render import CELL


@dataclass(frozen=True)
class Contrast:
    """Two test accuracies (the read-out without and with access to the structure) and the ceiling."""

    task: str
    without: str
    with_: str
    acc_without: float
    acc_with: float
    ceiling: float
    n_test: int

    @property
    def gap(self) -> float:
        """``acc_with - acc_without``."""
        return self.acc_with - self.acc_without

    def se(self, acc: float) -> float:
        """Binomial standard error of an accuracy on ``n_test`` rows."""
        return float(np.sqrt(max(acc * (1 - acc), 1e-12) / self.n_test))


def load_task(name: str, **options: Any) -> tuple[Any, dict[str, Any]]:
    """(adapter, ``{split: generated arrays}``) of a suite task with ``options`` (data seed 0 by default)."""
    cls = DATASETS.get(name)
    adapter = cls(cls.Options(**{"seed": 0, **options}))
    return adapter, {s: adapter.generate(s) for s in ("train", "val", "test")}


def onehot(values: np.ndarray, arity: int) -> np.ndarray:
    """``N x arity`` one-hot rows."""
    return np.eye(arity)[values]


# ------------------------------------------------------------------------------- token read-outs
def cell_tokens(images: np.ndarray, grid: int) -> np.ndarray:
    """``N x grid^2 x (3*8*8)`` float32 tokens: the pixels of each 8x8 cell (the encoder's token grid)."""
    n = images.shape[0]
    x = images.astype(np.float32) / 255.0
    x = x.reshape(n, 3, grid, CELL, grid, CELL).transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(n, grid * grid, 3 * CELL * CELL)


class TokenReadout(nn.Module):
    """Linear token embedding, then a mean over tokens (``mean``) or one learned query's softmax
    attention (``query``), then a linear classifier; the same token features for both."""

    def __init__(self, dim_in: int, num_classes: int, mode: str, dim: int = 64) -> None:
        super().__init__()
        self.mode = mode
        self.embed = nn.Linear(dim_in, dim)
        self.key = nn.Linear(dim_in, dim)
        self.query = nn.Parameter(torch.zeros(dim))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        values = self.embed(tokens)
        if self.mode == "mean":
            pooled = values.mean(dim=1)
        else:
            weights = torch.softmax(self.key(tokens) @ self.query / values.shape[-1] ** 0.5, dim=1)
            pooled = (weights.unsqueeze(-1) * values).sum(dim=1)
        return self.head(pooled)


def fit_readout(mode: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, num_classes: int,
                epochs: int = 30, seed: int = 0) -> np.ndarray:
    """Train a :class:`TokenReadout` with Adam (batch 128, lr 3e-3); return its class predictions on ``x_test``."""
    torch.manual_seed(seed)
    mean, std = x_train.mean(axis=(0, 1)), x_train.std(axis=(0, 1)) + 1e-6
    xt = torch.from_numpy((x_train - mean) / std)
    yt = torch.from_numpy(y_train)
    model = TokenReadout(x_train.shape[2], num_classes, mode)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(yt), generator=gen).split(128):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    with torch.no_grad():
        return model(torch.from_numpy((x_test - mean) / std)).argmax(1).numpy()


def parts_contrast(epochs: int = 30, **options: Any) -> Contrast:
    """Mean-pooled vs one-query read-out over the cell tokens, image-only (``suite-parts``)."""
    adapter, data = load_task("suite-parts", **options)
    grid, c = adapter.options.grid, adapter.task().model.num_classes
    tr, te = data["train"], data["test"]
    x_tr, x_te = cell_tokens(tr["images"], grid), cell_tokens(te["images"], grid)
    acc = {m: float((fit_readout(m, x_tr, tr["y"], x_te, c, epochs) == te["y"]).mean()) for m in ("mean", "query")}
    return Contrast("suite-parts", "mean-pooled tokens", "query read-out", acc["mean"], acc["query"],
                    adapter.ceiling()["image_only"], len(te["y"]))


# ------------------------------------------------------------------------- readings-level contrasts
def predict_contrast(**options: Any) -> Contrast:
    """Table-only rows scored by factor heads fitted on complete rows (``a`` from the image reading, ``b``
    from the table reading; class = (a, b)), with the image input zero-filled vs imputed from the table
    as ``E[one-hot(a) | b]`` (a linear regression fitted on complete training rows) (``suite-predict``).

    A joint logistic regression over both readings is not used: fitted on complete rows, its table
    weights already carry the coupling, so zero-filling imputes implicitly (docs/synthetic-suite.md)."""
    adapter, data = load_task("suite-predict", **options)
    k = adapter.options.n_values
    tr, te = data["train"], data["test"]
    a_tr, b_tr = onehot(tr["observations"]["a_img"], k), onehot(tr["observations"]["b_tab"], k)
    head_a = LogisticRegression(max_iter=2000).fit(a_tr, tr["latents"]["a"])
    head_b = LogisticRegression(max_iter=2000).fit(b_tr, tr["latents"]["b"])
    imputer = LinearRegression().fit(b_tr, a_tr)
    b_te = onehot(te["observations"]["b_tab"], k)
    b_hat = head_b.predict(b_te)
    zero = head_a.predict(np.zeros_like(b_te)) * k + b_hat
    imputed = head_a.predict(imputer.predict(b_te)) * k + b_hat
    return Contrast("suite-predict", "zero-filled image", "imputed image", float((zero == te["y"]).mean()),
                    float((imputed == te["y"]).mean()), adapter.ceiling()["tabular_only"], len(te["y"]))


def imbalance_contrast(**options: Any) -> Contrast:
    """Marginal value of each modality on complete rows, from exact Bayes accuracies on the test rows: what
    the image adds to the table (complete minus table only) vs what the table adds to the image (complete
    minus image only) (``suite-imbalance``). Joint training on complete rows is rewarded only by the
    former for learning the image; MCE's learning factors measure these contributions (Shapley values)."""
    adapter, data = load_task("suite-imbalance", **options)
    te = data["test"]
    acc = {p: float((post.argmax(1) == te["y"]).mean()) for p, post in te["bayes_posterior"].items()}
    chance = 1.0 / adapter.task().model.num_classes
    return Contrast("suite-imbalance", "image's value given the table", "table's value given the image",
                    acc["complete"] - acc["tabular_only"], acc["complete"] - acc["image_only"],
                    adapter.ceiling()["complete"] - chance, len(te["y"]))


def _gate_fit(e_img: np.ndarray, e_tab: np.ndarray, y: np.ndarray, per_class: bool) -> np.ndarray:
    """Maximum-likelihood gates of ``logit_c = a_c e_img[c] + b_c e_tab[c] + g_c`` (``a, b`` shared by all
    classes unless ``per_class``); returns the parameter vector."""
    n, c = e_img.shape
    k = c if per_class else 1

    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b, g = theta[:k], theta[k:2 * k], theta[2 * k:]
        z = a * e_img + b * e_tab + g
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        loss = -np.log(p[np.arange(n), y] + 1e-300).mean()
        d = p.copy()
        d[np.arange(n), y] -= 1.0
        d /= n
        ga, gb = (d * e_img).sum(0), (d * e_tab).sum(0)
        if not per_class:
            ga, gb = ga.sum(keepdims=True), gb.sum(keepdims=True)
        return loss, np.concatenate([ga, gb, d.sum(0)])

    return minimize(nll, np.zeros(2 * k + c), jac=True, method="L-BFGS-B").x


def _gate_predict(theta: np.ndarray, e_img: np.ndarray, e_tab: np.ndarray, per_class: bool) -> np.ndarray:
    k = e_img.shape[1] if per_class else 1
    return (theta[:k] * e_img + theta[k:2 * k] * e_tab + theta[2 * k:]).argmax(1)


def reliance_contrast(**options: Any) -> Contrast:
    """One modality gate for all classes vs one per class, over per-modality class evidence (the one-hot
    of each modality's reading), complete rows (``suite-reliance``)."""
    adapter, data = load_task("suite-reliance", **options)
    c = adapter.task().model.num_classes
    tr, te = data["train"], data["test"]
    ev = {s: (onehot(d["observations"]["y_img"], c), onehot(d["observations"]["y_tab"], c)) for s, d in data.items()}
    acc = {}
    for per_class in (False, True):
        theta = _gate_fit(*ev["train"], tr["y"], per_class)
        acc[per_class] = float((_gate_predict(theta, *ev["test"], per_class) == te["y"]).mean())
    return Contrast("suite-reliance", "one gate for all classes", "class-wise gates", acc[False], acc[True],
                    adapter.ceiling()["complete"], len(te["y"]))


def interaction_contrast(**options: Any) -> Contrast:
    """Additive vs cross-modal-interaction logistic regression on the readings, complete rows
    (``suite-interaction``)."""
    adapter, data = load_task("suite-interaction", **options)
    model = adapter.task().model

    def features(d: dict[str, Any], interact: bool) -> np.ndarray:
        img = np.hstack([onehot(d["observations"][r.name], r.arity) for r in model.readings_of(("image",))])
        tab = np.hstack([onehot(d["observations"][r.name], r.arity) for r in model.readings_of(("tabular",))])
        if not interact:
            return np.hstack([img, tab])
        return np.hstack([img, tab, (img[:, :, None] * tab[:, None, :]).reshape(len(img), -1)])

    tr, te = data["train"], data["test"]
    acc = {}
    for interact in (False, True):
        clf = LogisticRegression(max_iter=5000).fit(features(tr, interact), tr["y"])
        acc[interact] = float((clf.predict(features(te, interact)) == te["y"]).mean())
    return Contrast("suite-interaction", "additive", "cross-modal interaction", acc[False], acc[True],
                    adapter.ceiling()["complete"], len(te["y"]))


def shared_contrast(**options: Any) -> Contrast:
    """Exact Bayes accuracy of the shared factor from one image token (a one-to-one match with the table's
    single column) vs from all the image tokens that carry it, image only (``suite-shared``)."""
    adapter, data = load_task("suite-shared", **options)
    model = adapter.task().model
    te = data["test"]
    names = tuple(r.name for r in model.readings_of(("image",)))
    one = model.posterior_from(te["observations"], names[:1]).argmax(1)
    every = model.posterior_from(te["observations"], names).argmax(1)
    return Contrast("suite-shared", "one token (one-to-one)", "all tokens (transport)",
                    float((one == te["y"]).mean()), float((every == te["y"]).mean()),
                    adapter.ceiling()["image_only"], len(te["y"]))


CONTRASTS = {
    "suite-parts": parts_contrast,
    "suite-predict": predict_contrast,
    "suite-imbalance": imbalance_contrast,
    "suite-reliance": reliance_contrast,
    "suite-interaction": interaction_contrast,
    "suite-shared": shared_contrast,
}


def main() -> None:
    """Print every contrast (data seed 0, default options)."""
    torch.set_num_threads(1)
    print("| task | without the structure | with it | gap | ceiling |")
    print("|---|---|---|---|---|")
    for fn in CONTRASTS.values():
        c = fn()
        print(f"| {c.task} | {c.without}: {100 * c.acc_without:.1f} | {c.with_}: {100 * c.acc_with:.1f} "
              f"| {100 * c.gap:+.1f} | {100 * c.ceiling:.1f} |")


if __name__ == "__main__":
    main()
