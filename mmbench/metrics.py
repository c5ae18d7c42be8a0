"""Classification metrics (scikit-learn), overall and by missing pattern.

Macro AUROC and macro PRAUC (average precision) average one-vs-rest scores over the classes (or
labels) that have both positives and negatives in the evaluated rows; a metric that is undefined
for the rows (e.g. no rows of a pattern) is ``None``.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

from .core import PATTERNS

METRICS = ("accuracy", "macro_f1", "auroc", "prauc")


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _macro_ovr(score_fn, targets: np.ndarray, scores: np.ndarray) -> float | None:
    vals = [score_fn(targets[:, c], scores[:, c]) for c in range(targets.shape[1])
            if 0 < targets[:, c].sum() < targets.shape[0]]
    return float(np.mean(vals)) if vals else None


def compute_metrics(logits: np.ndarray, y: np.ndarray, task: str) -> dict[str, float | None]:
    """Accuracy, macro-F1, macro AUROC, macro PRAUC of ``logits`` against labels ``y``."""
    n = int(y.shape[0])
    if n == 0:
        return {m: None for m in METRICS} | {"n": 0}
    if task == "multilabel":
        probs = 1.0 / (1.0 + np.exp(-logits))
        pred = (probs > 0.5).astype(int)
        targets = y.astype(int)
        acc = float(accuracy_score(targets, pred))
        f1 = float(f1_score(targets, pred, average="macro", zero_division=0))
    else:
        probs = _softmax(logits.astype(np.float64))
        pred = probs.argmax(axis=1)
        num_classes = logits.shape[1]
        targets = np.eye(num_classes, dtype=int)[y.astype(int)]
        acc = float(accuracy_score(y, pred))
        f1 = float(f1_score(y, pred, average="macro", labels=np.unique(y), zero_division=0))
    if task == "binary":
        auroc = float(roc_auc_score(y, probs[:, 1])) if 0 < y.sum() < n else None
        prauc = float(average_precision_score(y, probs[:, 1])) if 0 < y.sum() < n else None
    else:
        auroc = _macro_ovr(roc_auc_score, targets, probs)
        prauc = _macro_ovr(average_precision_score, targets, probs)
    return {"accuracy": acc, "macro_f1": f1, "auroc": auroc, "prauc": prauc, "n": n}


def metrics_by_pattern(logits: np.ndarray, y: np.ndarray, present: np.ndarray,
                       task: str) -> dict[str, dict[str, float | None]]:
    """:func:`compute_metrics` on the rows of each missing pattern (complete, image_only, tabular_only)."""
    out = {}
    for name, row in PATTERNS.items():
        rows = (present == np.array(row, dtype=bool)).all(axis=1)
        out[name] = compute_metrics(logits[rows], y[rows], task)
    return out


def bayes_regret(logits: np.ndarray, y: np.ndarray, present: np.ndarray, index: np.ndarray,
                 posterior: dict[str, np.ndarray]) -> dict[str, float | None]:
    """Accuracy of the Bayes rule on the *same* test rows minus the model's, overall and per pattern.

    ``posterior[pattern]`` is the ``N x C`` Bayes posterior of every row of the split given what that
    pattern observes (a dataset with a known generative model provides it); ``index`` maps the
    evaluated rows to split rows. Row by row, the Bayes prediction uses the posterior of the row's own
    missing pattern, so the regret removes the luck of which rows were drawn: a regret of 0 is the best
    any classifier can do on these rows, up to ties.
    """
    pred = logits.argmax(axis=1)
    bayes = np.full(len(y), -1, dtype=np.int64)
    for name, row in PATTERNS.items():
        rows = (present == np.array(row, dtype=bool)).all(axis=1)
        if rows.any():
            bayes[rows] = np.asarray(posterior[name])[index[rows]].argmax(axis=1)
    model_ok, bayes_ok = pred == y, bayes == y
    out: dict[str, float | None] = {"overall": float(bayes_ok.mean() - model_ok.mean()) if len(y) else None}
    for name, row in PATTERNS.items():
        rows = (present == np.array(row, dtype=bool)).all(axis=1)
        out[name] = float(bayes_ok[rows].mean() - model_ok[rows].mean()) if rows.any() else None
    return out
