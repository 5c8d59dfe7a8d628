"""Valence / arousal targets from expression labels, identity splits and still-face metrics.

Still face photos carry a categorical expression label, while emofuse's models answer two
binary questions: is valence high (P(V+)) and is arousal high (P(A+)). The bridge between the
two is Russell's circumplex model of affect (Russell 1980, "A circumplex model of affect",
Journal of Personality and Social Psychology 39(6):1161-1178), which places each basic
expression in the valence x arousal plane. Expressions that sit near an axis's boundary
(neutral and surprise for valence; happiness, disgust and contempt for arousal) are left out
of that axis's metric rather than forced to one side.

The photos are many images of few people for some identities and one image for others, and
the classes are unbalanced. :func:`balanced_accuracy` therefore weighs every identity equally
within a class and every class equally, so neither a frequent person nor a frequent class
dominates the figure. :func:`expected_calibration_error` follows Guo et al. 2017.

numpy only: this module runs on the device side and in training alike.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError

EXPRESSIONS = ("neutral", "happiness", "sadness", "anger", "surprise", "disgust", "fear", "contempt")

# Russell 1980: happiness is the only clearly pleasant basic expression; neutral and surprise
# sit on (or straddle) the valence boundary and are left out.
VALENCE_OF: dict[str, int | None] = {
    "neutral": None,
    "happiness": 1,
    "sadness": 0,
    "anger": 0,
    "surprise": None,
    "disgust": 0,
    "fear": 0,
    "contempt": 0,
}
# Anger, fear and surprise are activated; neutral and sadness are deactivated; happiness,
# disgust and contempt straddle the arousal boundary and are left out.
AROUSAL_OF: dict[str, int | None] = {
    "neutral": 0,
    "happiness": None,
    "sadness": 0,
    "anger": 1,
    "surprise": 1,
    "disgust": None,
    "fear": 1,
    "contempt": None,
}
AXES: dict[str, dict[str, int | None]] = {"valence": VALENCE_OF, "arousal": AROUSAL_OF}

SPLITS = ("train", "test", "all")


def axis_targets(expressions: Sequence[str], axis: str) -> tuple[np.ndarray, np.ndarray]:
    """Binary targets of one circumplex axis for a list of expression labels.

    Args:
        expressions: N expression names, each one of :data:`EXPRESSIONS`.
        axis: ``"valence"`` (:data:`VALENCE_OF`) or ``"arousal"`` (:data:`AROUSAL_OF`).

    Returns:
        ``(keep, y)``: ``keep`` is a bool array (N,) that is False where the expression is
        left out of this axis; ``y`` is an int64 array (N,) with 1 (high), 0 (low) and -1
        where ``keep`` is False.

    Raises:
        ConfigError: unknown axis.
        BadInputError: an expression that is not one of :data:`EXPRESSIONS`.
    """
    if axis not in AXES:
        raise ConfigError(f"unknown affect axis {axis!r}; expected one of {sorted(AXES)}")
    mapping = AXES[axis]
    y = np.full(len(expressions), -1, dtype=np.int64)
    for i, name in enumerate(expressions):
        if name not in mapping:
            raise BadInputError(f"unknown expression {name!r}; expected one of {', '.join(EXPRESSIONS)}")
        value = mapping[name]
        if value is not None:
            y[i] = value
    return y >= 0, y


def identity_split(identity: str, test_fraction: float = 0.2) -> str:
    """The side of an identity-disjoint split that a person falls on.

    The side depends only on the identity string (SHA-256 of its UTF-8 bytes, first 8 bytes
    read as a fraction of 2**64), so every image of a person lands on the same side, the split
    is the same in every process and on every machine (Python's ``hash`` is salted per
    process), and adding people never moves existing ones.

    Args:
        identity: the person's identifier, a non-empty string (e.g. ``"aj_cook"``).
        test_fraction: share of identities sent to ``"test"``, in [0, 1].

    Returns:
        ``"test"`` or ``"train"``.

    Raises:
        BadInputError: empty or non-string identity.
        ConfigError: ``test_fraction`` outside [0, 1].
    """
    if not isinstance(identity, str) or not identity:
        raise BadInputError(f"identity must be a non-empty string, got {identity!r}")
    fraction = float(test_fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1], got {test_fraction!r}")
    digest = hashlib.sha256(identity.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "test" if u < fraction else "train"


def split_rows(rows: Iterable[Mapping], split: str = "test", test_fraction: float = 0.2,
               key: str = "identity") -> list:
    """Keep the rows whose identity falls on one side of :func:`identity_split`.

    Args:
        rows: mappings (e.g. ``csv.DictReader`` rows) holding an identity under ``key``.
        split: ``"test"``, ``"train"`` or ``"all"`` (every row, in order).
        test_fraction: as in :func:`identity_split`.
        key: the column that names the identity.

    Returns:
        The kept rows, in their input order.

    Raises:
        ConfigError: unknown split or bad ``test_fraction``.
        BadInputError: a row without ``key`` or with an empty identity.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    kept = []
    for row in rows:
        if key not in row:
            raise BadInputError(f"row has no {key!r} column: {dict(row)!r}")
        if split == "all" or identity_split(row[key], test_fraction) == split:
            kept.append(row)
    return kept


def _as_1d(name: str, values, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise BadInputError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise BadInputError(f"{name} has {arr.shape[0]} entries, expected {n}")
    return arr


def identity_weights(y_true, groups=None) -> np.ndarray:
    """Per-sample weights that give every (identity, class) cell a total weight of 1.

    Each sample weighs ``1 / n(identity, class)``, where ``n`` counts that identity's samples
    of that true class. Within a class every identity then counts once, however many images of
    it there are.

    Args:
        y_true: N true class labels (any hashable dtype numpy can compare).
        groups: N identity labels, or None for unit weights (every sample its own identity).

    Returns:
        float64 array (N,).

    Raises:
        BadInputError: shapes that do not match.
    """
    y = _as_1d("y_true", y_true)
    if groups is None:
        return np.ones(y.shape[0], dtype=np.float64)
    g = _as_1d("groups", groups, y.shape[0])
    if y.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    _, cell = np.unique(np.stack([y.astype(str), g.astype(str)], axis=1), axis=0, return_inverse=True)
    cell = np.asarray(cell).reshape(-1)
    counts = np.bincount(cell)
    return 1.0 / counts[cell].astype(np.float64)


def balanced_accuracy(y_true, y_pred, groups=None) -> float:
    """Mean over classes of identity-weighted recall.

    For each class c present in ``y_true``: recall_c = sum_i w_i [pred_i == c] / sum_i w_i over
    the samples i whose true class is c, with w_i = 1 / (number of samples of i's identity in
    class c) (:func:`identity_weights`). So recall_c is the mean over the identities in class c
    of each identity's own recall. The result is the unweighted mean of recall_c over the
    classes present; a class with no true samples is left out (its recall is undefined), and a
    predicted class that never occurs in ``y_true`` only lowers the other classes' recalls.
    With ``groups=None`` this is the usual balanced accuracy (Brodersen et al. 2010, "The
    balanced accuracy and its posterior distribution", ICPR). Works for binary and multi-class
    labels alike.

    Args:
        y_true: N true labels (ints or strings).
        y_pred: N predicted labels, same kind as ``y_true``.
        groups: N identity labels, or None.

    Returns:
        A float in [0, 1].

    Raises:
        BadInputError: no samples (no class to average over) or shapes that do not match.
    """
    y = _as_1d("y_true", y_true)
    p = _as_1d("y_pred", y_pred, y.shape[0])
    if y.shape[0] == 0:
        raise BadInputError("balanced accuracy needs at least one labelled sample; got none")
    w = identity_weights(y, groups)
    hit = (y == p)
    recalls = []
    for c in np.unique(y):
        in_c = y == c
        recalls.append(float(np.sum(w[in_c] * hit[in_c]) / np.sum(w[in_c])))
    return float(np.mean(recalls))


def expected_calibration_error(p_high, y_true, n_bins: int = 10, groups=None) -> float:
    """Expected calibration error of binary probabilities (Guo et al. 2017).

    Binned on the confidence of the predicted class, as in Guo, Pleiss, Sun & Weinberger 2017
    ("On calibration of modern neural networks", ICML) and Naeini et al. 2015: the prediction
    is 1 where ``p_high >= 0.5``, its confidence is ``max(p_high, 1 - p_high)`` and it is
    correct when it equals ``y_true``. Confidences go into ``n_bins`` equal-width bins on
    [0, 1] (bin k holds (k/n, (k+1)/n], the first also holds 0), and
    ECE = sum_b (W_b / W) |accuracy_b - confidence_b|, with W the sample weights. This is the
    definition most papers report, so figures compare; note that for a binary output the
    confidences lie in [0.5, 1], so with 10 bins only the upper 5 are used. (Binning on
    ``p_high`` itself would measure the class-1 reliability curve instead; it weighs
    confident-negative errors differently and is not what published ECEs mean.)

    With ``groups`` every sample weighs 1 / (number of samples of its identity with the same
    true class), as in :func:`balanced_accuracy`; classes are not re-balanced, so the figure
    describes the test set's class mix with one vote per person and class.

    Args:
        p_high: N probabilities of class 1 (float, in [0, 1], finite).
        y_true: N true labels in {0, 1}.
        n_bins: number of equal-width confidence bins (>= 1).
        groups: N identity labels, or None for unit weights.

    Returns:
        A float in [0, 1].

    Raises:
        ConfigError: ``n_bins < 1``.
        BadInputError: no samples, mismatched shapes, probabilities outside [0, 1] or not
            finite, labels other than 0 / 1.
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ConfigError(f"n_bins must be a positive integer, got {n_bins!r}")
    p = _as_1d("p_high", p_high).astype(np.float64)
    y = _as_1d("y_true", y_true, p.shape[0])
    if p.shape[0] == 0:
        raise BadInputError("calibration error needs at least one labelled sample; got none")
    if not np.all(np.isfinite(p)) or np.any(p < 0.0) or np.any(p > 1.0):
        raise BadInputError("p_high must hold finite probabilities in [0, 1]")
    if not np.all(np.isin(y, (0, 1))):
        raise BadInputError("y_true must hold binary labels 0 / 1")
    y = y.astype(np.int64)
    w = identity_weights(y, groups)
    pred = (p >= 0.5).astype(np.int64)
    conf = np.maximum(p, 1.0 - p)
    correct = (pred == y).astype(np.float64)
    n = int(n_bins)
    # ceil(conf * n) - 1 puts conf exactly on an edge k/n into bin k-1, i.e. right-closed bins.
    bins = np.clip(np.ceil(conf * n).astype(np.int64) - 1, 0, n - 1)
    total = float(np.sum(w))
    ece = 0.0
    for b in np.unique(bins):
        sel = bins == b
        wb = float(np.sum(w[sel]))
        acc = float(np.sum(w[sel] * correct[sel])) / wb
        mean_conf = float(np.sum(w[sel] * conf[sel])) / wb
        ece += wb / total * abs(acc - mean_conf)
    return float(ece)
