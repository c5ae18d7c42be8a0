"""Every metric x task type against values worked out by hand from the definitions in docs/metrics.md.

The arrays are small and each expected value is derived in the comments (never by calling
scikit-learn again). Logits are built from chosen probabilities plus a per-row shift: softmax
ignores the shift, raw logits do not, so a metric computed on logits instead of probabilities
changes. No confidence sits on an ECE bin edge (k/15), so the binning is not at the mercy of rounding.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmbench.metrics import (
    ECE_BINS,
    LOWER_IS_BETTER,
    METRICS,
    compute_metrics,
    expected_calibration_error,
    higher_is_better,
    metrics_by_pattern,
)


def softmax_logits(probs: list[list[float]], shift: list[float] | None = None) -> np.ndarray:
    """Logits whose softmax is ``probs`` (row-wise), each row shifted by ``shift``."""
    p = np.array(probs, dtype=np.float64)
    s = np.zeros(len(p)) if shift is None else np.array(shift, dtype=np.float64)
    return np.log(p) + s[:, None]


def sigmoid_logits(probs: list[list[float]]) -> np.ndarray:
    """Logits whose sigmoid is ``probs`` (element-wise)."""
    p = np.array(probs, dtype=np.float64)
    return np.log(p) - np.log1p(-p)


# ---------------------------------------------------------------- multiclass (K = 3, n = 6)
#
# row  y  probabilities        pred  conf  correct
#  r0  0  [.65, .25, .10]      0     .65   yes
#  r1  0  [.30, .50, .20]      1     .50   no
#  r2  1  [.20, .70, .10]      1     .70   yes
#  r3  1  [.05, .90, .05]      1     .90   yes
#  r4  1  [.50, .10, .40]      0     .50   no    (raw logits shifted by +2: its class-2 logit
#  r5  2  [.10, .20, .70]      2     .70   yes    log .4 + 2 = 1.08 beats r5's log .7 = -0.36)
MC_Y = np.array([0, 0, 1, 1, 1, 2])
MC_LOGITS = softmax_logits([[.65, .25, .10], [.30, .50, .20], [.20, .70, .10], [.05, .90, .05],
                            [.50, .10, .40], [.10, .20, .70]], shift=[0, 0, 0, 0, 2, 0])


def test_multiclass_accuracy_and_macro_f1() -> None:
    m = compute_metrics(MC_LOGITS, MC_Y, "multiclass")
    assert m["n"] == 6
    # r0, r2, r3, r5 right -> 4/6
    assert m["accuracy"] == pytest.approx(4 / 6)
    # class 0: TP r0, FP r4, FN r1          -> F1 = 2*1/(2*1+1+1) = 1/2
    # class 1: TP r2 r3, FP r1, FN r4       -> F1 = 2*2/(2*2+1+1) = 2/3
    # class 2: TP r5                         -> F1 = 1
    # macro = (1/2 + 2/3 + 1)/3 = 13/18 (micro = accuracy = 2/3; weighted = (2*1/2 + 3*2/3 + 1)/6 = 2/3)
    assert m["macro_f1"] == pytest.approx(13 / 18)


def test_multiclass_auroc_prauc_are_one_vs_rest_macro_on_probabilities() -> None:
    m = compute_metrics(MC_LOGITS, MC_Y, "multiclass")
    # class 0: positives {.65, .30}, negatives {.20, .05, .50, .10}: .65 beats 4, .30 beats 3 -> 7/8
    # class 1: positives {.70, .90, .10}, negatives {.25, .50, .20}: 3 + 3 + 0 -> 6/9 = 2/3
    # class 2: positive {.70} beats all five negatives -> 1
    # macro AUROC = (7/8 + 2/3 + 1)/3 = (21 + 16 + 24)/72 = 61/72
    assert m["auroc"] == pytest.approx(61 / 72)
    # AP = sum over descending thresholds of (R_n - R_{n-1}) * P_n
    # class 0: .65(+) P=1 R=1/2; .50(-); .30(+) P=2/3 R=1            -> 1/2*1 + 1/2*2/3 = 5/6
    # class 1: .90(+) P=1 R=1/3; .70(+) P=1 R=2/3; .50 .25 .20 (-); .10(+) P=3/6 R=1
    #                                                                -> 1/3 + 1/3 + 1/3*1/2 = 5/6
    # class 2: .70(+) first -> 1
    # macro PRAUC = (5/6 + 5/6 + 1)/3 = 8/9
    assert m["prauc"] == pytest.approx(8 / 9)


def test_multiclass_ece_and_brier() -> None:
    m = compute_metrics(MC_LOGITS, MC_Y, "multiclass")
    # 15 bins ((m-1)/15, m/15]; bin index = ceil(15*conf) - 1, sum of (correct - conf) per bin:
    #   .50 -> bin 7 (7.5):  r1 (0-.50) + r4 (0-.50) = -1.00
    #   .65 -> bin 9 (9.75): r0 (1-.65)              = +0.35
    #   .70 -> bin 10 (10.5): r2 (1-.70) + r5 (1-.70) = +0.60
    #   .90 -> bin 13 (13.5): r3 (1-.90)              = +0.10
    # ECE = (1.00 + .35 + .60 + .10)/6 = 2.05/6   (one bin would give |4/6 - 3.95/6| = .05/6)
    assert m["ece"] == pytest.approx(2.05 / 6)
    # Brier = mean over rows of sum_k (p_k - [y = k])^2
    #   r0: .35^2 + .25^2 + .10^2 = .1225 + .0625 + .01   = .195
    #   r1: .70^2 + .50^2 + .20^2 = .49 + .25 + .04       = .78
    #   r2: .20^2 + .30^2 + .10^2 = .04 + .09 + .01       = .14
    #   r3: .05^2 + .10^2 + .05^2 = .0025 + .01 + .0025   = .015
    #   r4: .50^2 + .90^2 + .40^2 = .25 + .81 + .16       = 1.22
    #   r5: .10^2 + .20^2 + .30^2 = .01 + .04 + .09       = .14
    # sum 2.49 over 6 rows = .415 (dividing by K as well would give .138)
    assert m["brier"] == pytest.approx(2.49 / 6)


def test_multiclass_class_absent_from_rows() -> None:
    # K = 4; class 2 is absent and never predicted, class 3 is absent but predicted once (r1).
    # row  y  probabilities             pred
    #  r0  0  [.70, .10, .10, .10]      0
    #  r1  0  [.30, .10, .10, .50]      3
    #  r2  1  [.10, .60, .10, .20]      1
    #  r3  1  [.25, .45, .10, .20]      1
    y = np.array([0, 0, 1, 1])
    logits = softmax_logits([[.7, .1, .1, .1], [.3, .1, .1, .5], [.1, .6, .1, .2], [.25, .45, .1, .2]])
    m = compute_metrics(logits, y, "multiclass")
    assert m["accuracy"] == pytest.approx(3 / 4)
    # macro over the classes present in y, {0, 1}:
    # class 0: TP r0, FN r1 -> 2/3; class 1: TP r2 r3 -> 1; macro = (2/3 + 1)/2 = 5/6.
    # (over {0,1,3} = labels of y and predictions it would be (2/3 + 1 + 0)/3 = 5/9;
    #  over all four classes (2/3 + 1 + 0 + 0)/4 = 5/12)
    assert m["macro_f1"] == pytest.approx(5 / 6)
    # AUROC / PRAUC only over classes 0 and 1 (2 and 3 have no positives):
    # class 0: positives {.70, .30} vs negatives {.10, .25}: 4/4; class 1: {.60, .45} vs {.10, .10}: 4/4
    assert m["auroc"] == pytest.approx(1.0)
    assert m["prauc"] == pytest.approx(1.0)
    # Brier still sums over all four classes: r1 = .70^2 + .10^2 + .10^2 + .50^2 = .49+.01+.01+.25 = .76
    # r0 = .09+.01+.01+.01 = .12; r2 = .01+.16+.01+.04 = .22; r3 = .0625+.3025+.01+.04 = .415
    assert m["brier"] == pytest.approx((.12 + .76 + .22 + .415) / 4)


def test_multiclass_single_class_rows_have_no_auroc() -> None:
    # every row is class 1: no class has both positives and negatives
    logits = softmax_logits([[.2, .7, .1], [.1, .3, .6]])
    m = compute_metrics(logits, np.array([1, 1]), "multiclass")
    assert m["auroc"] is None and m["prauc"] is None
    # macro F1 over {1} alone: TP r0, FN r1 -> 2/3
    assert m["macro_f1"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------- binary (n = 6), p = P(class 1)
#
# row  y  p     pred  conf  correct
#  r0  1  .70   1     .70   yes
#  r1  1  .30   0     .70   no
#  r2  0  .45   0     .55   yes
#  r3  0  .15   0     .85   yes   (raw logits shifted by +3: class-1 logit log .15 + 3 = 1.10 is the largest)
#  r4  0  .65   1     .65   no
#  r5  0  .62   1     .62   no
BIN_Y = np.array([1, 1, 0, 0, 0, 0])
BIN_P = [.70, .30, .45, .15, .65, .62]
BIN_LOGITS = softmax_logits([[1 - p, p] for p in BIN_P], shift=[0, 0, 0, 3, 0, 0])


def test_binary_accuracy_and_macro_f1_over_both_classes() -> None:
    m = compute_metrics(BIN_LOGITS, BIN_Y, "binary")
    # r0, r2, r3 right -> 3/6
    assert m["accuracy"] == pytest.approx(1 / 2)
    # class 1: TP r0, FN r1, FP r4 r5 -> 2/(2+1+2) = 2/5
    # class 0: TP r2 r3, FN r4 r5, FP r1 -> 4/(4+2+1) = 4/7
    # macro = (2/5 + 4/7)/2 = 17/35  (positive-class F1 alone would be 2/5, micro 1/2)
    assert m["macro_f1"] == pytest.approx(17 / 35)


def test_binary_auroc_prauc_use_class_one() -> None:
    m = compute_metrics(BIN_LOGITS, BIN_Y, "binary")
    # positives {.70, .30}, negatives {.45, .15, .65, .62}: .70 beats 4, .30 beats 1 -> 5/8
    # (class-0 scores would give 1 - 5/8 = 3/8)
    assert m["auroc"] == pytest.approx(5 / 8)
    # .70(+) P=1 R=1/2; .65 .62 .45 (-); .30(+) P=2/5 R=1 -> 1/2 + 1/2*2/5 = 7/10
    assert m["prauc"] == pytest.approx(7 / 10)


def test_binary_ece_is_top_label_and_brier_is_one_probability() -> None:
    m = compute_metrics(BIN_LOGITS, BIN_Y, "binary")
    # top-label confidence max(p, 1-p), per bin the sum of (correct - conf):
    #   bin 10 (.70): r0 (1-.70) + r1 (0-.70) = -.40
    #   bin 8  (.55): r2 (1-.55)               = +.45
    #   bin 12 (.85): r3 (1-.85)               = +.15
    #   bin 9  (.65, .62): r4 (0-.65) + r5 (0-.62) = -1.27
    # ECE = (.40 + .45 + .15 + 1.27)/6 = 2.27/6
    # (binning p itself against y would put r0 and r1 apart: (.30+.70+.45+.15+1.27)/6 = 2.87/6)
    assert m["ece"] == pytest.approx(2.27 / 6)
    # Brier = mean (p - y)^2 = (.30^2 + .70^2 + .45^2 + .15^2 + .65^2 + .62^2)/6
    #       = (.09 + .49 + .2025 + .0225 + .4225 + .3844)/6 = 1.6119/6
    # (the two-class sum form would be twice that)
    assert m["brier"] == pytest.approx(1.6119 / 6)


def test_binary_ties() -> None:
    # y = [1, 0, 1, 0, 1], p = [.7, .7, .3, .1, .5]
    y = np.array([1, 0, 1, 0, 1])
    logits = softmax_logits([[1 - p, p] for p in (.7, .7, .3, .1, .5)])
    m = compute_metrics(logits, y, "binary")
    # p = .5 is an arg-max tie: class 0 wins -> preds [1, 1, 0, 0, 0], right on r0 and r3 -> 2/5
    assert m["accuracy"] == pytest.approx(2 / 5)
    # positives {.7, .3, .5}, negatives {.7, .1}; a tied pair counts 1/2:
    # .7: 1/2 + 1; .3: 0 + 1; .5: 0 + 1 -> 3.5/6
    assert m["auroc"] == pytest.approx(3.5 / 6)
    # tied scores form one threshold: .7 {r0+, r1-} P=1/2 R=1/3; .5 (+) P=2/3 R=2/3; .3 (+) P=3/4 R=1
    # AP = 1/3*1/2 + 1/3*2/3 + 1/3*3/4 = 1/6 + 2/9 + 1/4 = 23/36
    assert m["prauc"] == pytest.approx(23 / 36)


def test_multiclass_argmax_tie_goes_to_lowest_index() -> None:
    m = compute_metrics(np.array([[1.0, 1.0, 0.0]]), np.array([1]), "multiclass")
    assert m["accuracy"] == 0.0


def test_binary_one_class_rows() -> None:
    # y = [0, 0], p = [.1, .7]: preds [0, 1]
    m = compute_metrics(softmax_logits([[.9, .1], [.3, .7]]), np.array([0, 0]), "binary")
    assert m["auroc"] is None and m["prauc"] is None
    assert m["accuracy"] == pytest.approx(1 / 2)
    # only class 0 present: TP r0, FN r1 -> 2/3 (with class 1 as well: (2/3 + 0)/2 = 1/3)
    assert m["macro_f1"] == pytest.approx(2 / 3)
    # ECE: bin 13 (.9): 1-.9 = .1; bin 10 (.7): 0-.7 -> (.1 + .7)/2 = .4
    assert m["ece"] == pytest.approx(0.4)
    # Brier: (.1^2 + .7^2)/2 = (.01 + .49)/2 = .25
    assert m["brier"] == pytest.approx(0.25)


# ---------------------------------------------------------------- multilabel (L = 3, n = 4)
#
# row  y          p                   pred (p > .5)   exact
#  r0  [1, 0, 0]  [.90, .45, .50]     [1, 0, 0]       yes   (.50 is a tie: predicts 0)
#  r1  [1, 1, 0]  [.65, .35, .10]     [1, 0, 0]       no
#  r2  [0, 1, 0]  [.35, .85, .30]     [0, 1, 0]       yes
#  r3  [0, 0, 0]  [.55, .15, .65]     [1, 0, 1]       no
# label 2 has no positive.
ML_Y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
ML_LOGITS = sigmoid_logits([[.90, .45, .50], [.65, .35, .10], [.35, .85, .30], [.55, .15, .65]])


def test_multilabel_accuracy_is_exact_match() -> None:
    m = compute_metrics(ML_LOGITS, ML_Y, "multilabel")
    # r0 and r2 exact -> 2/4 (label-wise accuracy would be 3+2+3+1 = 9/12)
    assert m["accuracy"] == pytest.approx(1 / 2)


def test_multilabel_macro_f1_over_labels_with_positives() -> None:
    m = compute_metrics(ML_LOGITS, ML_Y, "multilabel")
    # label 0: y [1,1,0,0], pred [1,1,0,1] -> TP 2, FP 1 -> 4/5
    # label 1: y [0,1,1,0], pred [0,0,1,0] -> TP 1, FN 1 -> 2/3
    # label 2: no positive -> left out (scored 0 it would give (4/5 + 2/3 + 0)/3 = 22/45)
    # macro = (4/5 + 2/3)/2 = 11/15
    # (threshold .6 instead of .5 would flip r3's label 0 and give label 0 F1 = 1)
    assert m["macro_f1"] == pytest.approx(11 / 15)


def test_multilabel_auroc_prauc_over_labels_with_both() -> None:
    m = compute_metrics(ML_LOGITS, ML_Y, "multilabel")
    # label 0: positives {.90, .65} vs negatives {.35, .55} -> 4/4 = 1, AP = 1
    # label 1: positives {.35, .85} vs negatives {.45, .15}: .35 beats 1, .85 beats 2 -> 3/4
    #          AP: .85(+) P=1 R=1/2; .45(-); .35(+) P=2/3 R=1 -> 1/2 + 1/2*2/3 = 5/6
    # label 2: no positive -> left out
    assert m["auroc"] == pytest.approx((1 + 3 / 4) / 2)
    assert m["prauc"] == pytest.approx((1 + 5 / 6) / 2)


def test_multilabel_ece_and_brier_average_over_labels() -> None:
    m = compute_metrics(ML_LOGITS, ML_Y, "multilabel")
    # per label, top-label binary ECE: conf = max(p, 1-p), correct = (p > .5) == y
    # label 0: r0 .90 ok +.10 (bin 13); r1 .65 ok +.35, r2 .65 ok +.35 (bin 9); r3 .55 wrong -.55 (bin 8)
    #          -> (.10 + .70 + .55)/4 = 1.35/4
    # label 1: r0 .55 ok +.45 (bin 8); r1 .65 wrong -.65 (bin 9); r2 .85 ok, r3 .85 ok +.30 (bin 12)
    #          -> (.45 + .65 + .30)/4 = 1.40/4
    # label 2: r0 .50 ok +.50 (bin 7); r1 .90 ok +.10 (bin 13); r2 .70 ok +.30 (bin 10); r3 .65 wrong -.65
    #          (bin 9) -> 1.55/4
    # ECE = (1.35 + 1.40 + 1.55)/(4*3) = 4.30/12
    # (with p >= .5, r0's tie would count wrong on label 2: bin 7 gives -.50 and ECE = 4.30/12 unchanged
    #  in magnitude - the exact-match accuracy above catches that mutation instead)
    assert m["ece"] == pytest.approx(4.30 / 12)
    # Brier: mean over labels of mean over rows of (p - y)^2
    # label 0: .01 + .1225 + .1225 + .3025 = .5575
    # label 1: .2025 + .4225 + .0225 + .0225 = .67
    # label 2: .25 + .01 + .09 + .4225 = .7725
    # (.5575 + .67 + .7725)/(4*3) = 2.0/12 (summing over labels instead would give 2.0/4)
    assert m["brier"] == pytest.approx(2.0 / 12)


def test_multilabel_ece_is_top_label_per_label_like_binary() -> None:
    # one label, p = [.7, .3], y = [1, 1]: confidences .7 and .7 (bin 10), right and wrong
    # top-label: |(1 - .7) + (0 - .7)|/2 = .4/2; binning p against y would give (.3 + .7)/2
    y = np.array([[1], [1]])
    ml = compute_metrics(sigmoid_logits([[.7], [.3]]), y, "multilabel")
    assert ml["ece"] == pytest.approx(.4 / 2)
    # the same probabilities as a binary task give the same ECE and Brier ((.3^2 + .7^2)/2 = .29)
    binary = compute_metrics(softmax_logits([[.3, .7], [.7, .3]]), y[:, 0], "binary")
    assert binary["ece"] == pytest.approx(ml["ece"]) and binary["brier"] == pytest.approx(ml["brier"])
    assert ml["brier"] == pytest.approx(.29)


def test_multilabel_threshold_tie_predicts_negative() -> None:
    # logit 0 -> p = .5 -> predicted 0: right when y = 0
    m = compute_metrics(np.array([[0.0, 4.0]]), np.array([[0, 1]]), "multilabel")
    assert m["accuracy"] == 1.0


def test_multilabel_perfect_prediction_scores_one_despite_an_empty_label() -> None:
    m = compute_metrics(np.array([[5.0, -5.0], [-5.0, -5.0]]), np.array([[1, 0], [0, 0]]), "multilabel")
    assert m["accuracy"] == 1.0 and m["macro_f1"] == pytest.approx(1.0)


def test_multilabel_without_any_positive_has_no_macro_f1() -> None:
    m = compute_metrics(np.array([[-1.0, 2.0]]), np.array([[0, 0]]), "multilabel")
    assert m["macro_f1"] is None and m["auroc"] is None and m["prauc"] is None
    # still defined: label 0 conf .731 right, label 1 conf .881 wrong
    assert m["accuracy"] == 0.0 and m["brier"] is not None and m["ece"] is not None


# ---------------------------------------------------------------- ECE binning, Brier range


def test_ece_uses_fifteen_equal_width_bins() -> None:
    assert ECE_BINS == 15
    # .62 (right) and .68 (wrong) fall in bins 9 and 10 of 15 (9.3, 10.2) but share (.6, .7] of 10:
    # 15 bins: (|1-.62| + |0-.68|)/2 = 1.06/2; 10 bins would give |1-.62-.68|/2 = .30/2
    assert expected_calibration_error(np.array([.62, .68]), np.array([1, 0])) == pytest.approx(1.06 / 2)
    assert expected_calibration_error(np.array([.62, .68]), np.array([1, 0]), n_bins=10) == pytest.approx(.30 / 2)
    # bins are right-closed, ((m-1)/15, m/15]: .6 = 9/15 closes bin 8, .62 opens bin 9 -> (|1-.6| + |0-.62|)/2
    # (left-closed bins [(m-1)/15, m/15) would pool them: |1 - .6 - .62|/2 = .22/2)
    assert expected_calibration_error(np.array([.6, .62]), np.array([1, 0])) == pytest.approx(1.02 / 2)
    # confidence 1 lies in the last bin, 0 in the first; both exactly right here
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([1, 0])) == 0.0


def test_brier_multiclass_reaches_two_when_confidently_wrong() -> None:
    m = compute_metrics(np.array([[30.0, -30.0, -30.0]]), np.array([1]), "multiclass")
    # p ~ [1, 0, 0] against [0, 1, 0]: 1 + 1 + 0 = 2
    assert m["brier"] == pytest.approx(2.0)
    assert m["ece"] == pytest.approx(1.0)


# ---------------------------------------------------------------- patterns, empty rows, bookkeeping


def test_by_pattern_and_empty_pattern() -> None:
    # binary fixture: r0-r2 complete, r3-r5 image-only, no tabular-only row
    present = np.array([[True, True]] * 3 + [[True, False]] * 3)
    by = metrics_by_pattern(BIN_LOGITS, BIN_Y, present, "binary")
    assert set(by) == {"complete", "image_only", "tabular_only"}
    c, i, t = by["complete"], by["image_only"], by["tabular_only"]
    # complete r0-r2: bin 10: +.30 - .70 = -.40; bin 8: +.45 -> ECE = .85/3; Brier (.09 + .49 + .2025)/3
    assert c["n"] == 3 and c["ece"] == pytest.approx(.85 / 3) and c["brier"] == pytest.approx(.7825 / 3)
    # image-only r3-r5, all class 0: no AUROC; macro F1 over class 0 alone: TP r3, FN r4 r5 -> 2/4
    assert i["auroc"] is None and i["prauc"] is None and i["macro_f1"] == pytest.approx(1 / 2)
    # ECE: bin 12: +.15; bin 9: -.65 - .62 -> (.15 + 1.27)/3; Brier (.0225 + .4225 + .3844)/3
    assert i["ece"] == pytest.approx(1.42 / 3) and i["brier"] == pytest.approx(.8294 / 3)
    # empty pattern: every metric undefined, n = 0, and JSON writes null
    assert t == {m: None for m in METRICS} | {"n": 0}
    assert json.loads(json.dumps(t))["ece"] is None and "null" in json.dumps(t)


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel"])
def test_every_metric_key_for_every_task(task: str) -> None:
    logits = {"multilabel": ML_LOGITS, "binary": BIN_LOGITS, "multiclass": MC_LOGITS}[task]
    y = {"multilabel": ML_Y, "binary": BIN_Y, "multiclass": MC_Y}[task]
    m = compute_metrics(logits, y, task)
    assert list(m) == [*METRICS, "n"]
    assert all(isinstance(m[k], float) for k in METRICS)
    assert compute_metrics(logits[:0], y[:0], task) == {k: None for k in METRICS} | {"n": 0}


def test_lower_is_better() -> None:
    assert {"ece", "brier"} <= set(METRICS)
    assert LOWER_IS_BETTER == {"ece", "brier"}
    assert [higher_is_better(k) for k in METRICS] == [True, True, True, True, False, False]


def test_unknown_task_is_refused() -> None:
    with pytest.raises(ValueError, match="multiclass, binary, multilabel"):
        compute_metrics(MC_LOGITS, MC_Y, "regression")


def test_bayes_regret_is_bayes_accuracy_minus_model_accuracy_on_the_same_rows() -> None:
    from mmbench.metrics import bayes_regret

    # 4 evaluated rows = split rows 3, 0, 2, 1; patterns complete, complete, image-only, tabular-only
    y = np.array([0, 1, 1, 0])
    index = np.array([3, 0, 2, 1])
    present = np.array([[1, 1], [1, 1], [1, 0], [0, 1]], dtype=bool)
    logits = np.array([[2.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # predicts 0, 0, 1, 1: right, wrong, right, wrong
    post = {  # per split row (0..3), the Bayes posterior given what each pattern observes
        "complete": np.array([[0.2, 0.8], [0.5, 0.5], [0.5, 0.5], [0.9, 0.1]]),  # rows 3 -> 0 (right), 0 -> 1 (right)
        "image_only": np.array([[0.5, 0.5], [0.5, 0.5], [0.7, 0.3], [0.5, 0.5]]),  # row 2 -> 0 (wrong)
        "tabular_only": np.array([[0.5, 0.5], [0.6, 0.4], [0.5, 0.5], [0.5, 0.5]]),  # row 1 -> 0 (right)
    }
    r = bayes_regret(logits, y, present, index, post)
    # Bayes right on 3 of 4, model on 2 of 4 -> 0.25; complete 2/2 vs 1/2; image-only 0/1 vs 1/1; tabular 1/1 vs 0/1
    assert r == {"overall": 0.25, "complete": 0.5, "image_only": -1.0, "tabular_only": 1.0}
