"""Classification metrics (numpy + scikit-learn, no torch), overall and by missing pattern.

Every choice below is defined with worked examples in ``docs/metrics.md``.

* **Probabilities and predictions.** ``multiclass`` and ``binary`` (two logits; class 1 is the
  positive class): softmax over the logits, prediction = arg-max (a tie goes to the lowest class
  index). ``multilabel``: an independent sigmoid per label, prediction ``p > 0.5`` (a logit of
  exactly 0 predicts the negative).
* ``accuracy``: fraction of rows predicted right; for ``multilabel`` it is the *exact-match (subset)
  accuracy* - a row counts only when every one of its labels is right.
* ``macro_f1``: unweighted mean of the per-class F1 over the classes that have at least one positive
  among the evaluated rows (``labels=np.unique(y)`` for multiclass and binary - so binary macro-F1 is
  the mean of the F1 of class 0 and of class 1; the labels with a positive row for multilabel). A
  class without positives has no recall and its F1 is undefined (scored 0 it would punish a perfect
  model, scored 1 it would reward one for nothing), so it is left out; a class predicted but absent
  still costs through the recall of the classes whose rows it took. In a missing pattern with few
  rows the average therefore runs over fewer classes than overall (one class for a pattern whose rows
  all share a label). ``None`` when no label has a positive (multilabel only).
* ``auroc`` / ``prauc`` (area under the ROC curve / average precision, sklearn's step-wise sum,
  no interpolation): binary - of the class-1 probability, ``None`` unless both classes occur;
  otherwise the unweighted mean of one-vs-rest scores over the classes (labels) that have both
  positives and negatives among the evaluated rows, ``None`` if there is none.
* ``ece``: expected calibration error (Guo et al. 2017, "On Calibration of Modern Neural Networks",
  Eq. 3) with :data:`ECE_BINS` equal-width confidence bins ``((m-1)/M, m/M]``:
  ``sum_m |B_m|/n * |acc(B_m) - conf(B_m)|``. Multiclass and binary: top-label confidence
  (the largest softmax probability) and correctness of the arg-max. Multilabel: the mean over labels
  of each label's binary top-label ECE (confidence ``max(p, 1-p)``, correct when ``(p > 0.5) == y``),
  which equals the binary ECE when there is one label.
* ``brier``: multiclass - mean over rows of the squared error summed over classes,
  ``mean_i sum_k (p_ik - [y_i = k])^2``, range [0, 2]; binary - the one-probability form
  ``mean_i (p_i1 - y_i)^2`` (``sklearn.metrics.brier_score_loss``), range [0, 1], half the
  two-class sum; multilabel - the mean over labels of the per-label binary Brier score, range [0, 1].
* ``ece`` and ``brier`` are lower-is-better (:data:`LOWER_IS_BETTER`); the others higher-is-better.
* A metric undefined for the rows is ``None`` (JSON ``null``); no rows (an empty pattern) makes every
  metric ``None`` with ``n = 0``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import expit, softmax
from sklearn.metrics import accuracy_score, average_precision_score, brier_score_loss, f1_score, roc_auc_score

from .core import PATTERNS, higher_is_better  # noqa: F401  (re-exported)

#: Lower-is-better metrics of the predictions (``regret``, also lower-is-better, is not computed here).
LOWER_IS_BETTER: frozenset[str] = frozenset({"ece", "brier"})

METRICS = ("accuracy", "macro_f1", "auroc", "prauc", "ece", "brier")
TASKS = ("multiclass", "binary", "multilabel")
ECE_BINS = 15


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE of Guo et al. 2017 Eq. 3 over ``n_bins`` equal-width bins ``((m-1)/M, m/M]`` (0 falls in the first).

    ``sum_m |B_m|/n * |acc(B_m) - conf(B_m)|`` equals ``sum_m |sum_{i in B_m} (correct_i - conf_i)| / n``.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    gaps = np.asarray(correct, dtype=np.float64) - confidence
    bins = np.digitize(confidence, np.linspace(0.0, 1.0, n_bins + 1)[1:-1], right=True)
    return float(np.abs(np.bincount(bins, weights=gaps, minlength=n_bins)).sum() / confidence.shape[0])


def _macro_ovr(score_fn: Callable[[np.ndarray, np.ndarray], float], targets: np.ndarray,
               scores: np.ndarray) -> float | None:
    vals = [score_fn(targets[:, c], scores[:, c]) for c in range(targets.shape[1])
            if 0 < targets[:, c].sum() < targets.shape[0]]
    return float(np.mean(vals)) if vals else None


def _multilabel(logits: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    probs = expit(logits)
    pred = (probs > 0.5).astype(int)
    targets = y.astype(int)
    with_pos = np.flatnonzero(targets.sum(axis=0) > 0)
    f1 = (float(f1_score(targets, pred, average="macro", labels=with_pos, zero_division=0))
          if with_pos.size else None)
    labels = range(targets.shape[1])
    return {
        "accuracy": float(accuracy_score(targets, pred)),  # exact-match (subset) accuracy
        "macro_f1": f1,
        "auroc": _macro_ovr(roc_auc_score, targets, probs),
        "prauc": _macro_ovr(average_precision_score, targets, probs),
        "ece": float(np.mean([expected_calibration_error(np.maximum(probs[:, j], 1.0 - probs[:, j]),
                                                         pred[:, j] == targets[:, j]) for j in labels])),
        "brier": float(np.mean([brier_score_loss(targets[:, j], probs[:, j], pos_label=1) for j in labels])),
    }


def _single_label(logits: np.ndarray, y: np.ndarray, task: str) -> dict[str, float | None]:
    probs = softmax(logits, axis=1)
    pred = probs.argmax(axis=1)
    y = y.astype(int)
    n = y.shape[0]
    targets = np.eye(logits.shape[1], dtype=int)[y]
    out: dict[str, float | None] = {
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", labels=np.unique(y), zero_division=0)),
        "ece": expected_calibration_error(probs.max(axis=1), pred == y),
    }
    if task == "binary":
        both = 0 < y.sum() < n
        out["auroc"] = float(roc_auc_score(y, probs[:, 1])) if both else None
        out["prauc"] = float(average_precision_score(y, probs[:, 1])) if both else None
        out["brier"] = float(brier_score_loss(y, probs[:, 1], pos_label=1))
    else:
        out["auroc"] = _macro_ovr(roc_auc_score, targets, probs)
        out["prauc"] = _macro_ovr(average_precision_score, targets, probs)
        out["brier"] = float(np.mean(((probs - targets) ** 2).sum(axis=1)))
    return out


def compute_metrics(logits: np.ndarray, y: np.ndarray, task: str) -> dict[str, float | None]:
    """Every metric of :data:`METRICS` (and the row count ``n``) of ``logits`` against labels ``y``.

    ``logits``: ``N x K`` (``K = 2`` for binary); ``y``: ``N`` class indices, or ``N x K`` 0/1 for
    multilabel. Definitions in the module docstring.
    """
    if task not in TASKS:
        raise ValueError(f"task {task!r}: expected one of {', '.join(TASKS)}")
    n = int(y.shape[0])
    if n == 0:
        return {m: None for m in METRICS} | {"n": 0}
    logits = np.asarray(logits, dtype=np.float64)
    out = _multilabel(logits, y) if task == "multilabel" else _single_label(logits, y, task)
    return {m: out[m] for m in METRICS} | {"n": n}


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
