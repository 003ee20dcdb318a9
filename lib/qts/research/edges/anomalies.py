"""Anomaly detectors. Every value at bar i uses candles up to i only.

Robust z-scores (:func:`qts.strategies.edge.features`): the log return, the log volume and the log
high-low range (a spread proxy) against the median / MAD of the ``window`` bars before i. A robust
detector fires where |z| passes a threshold (``ret_drop``: z_ret <= -k, ``ret_spike``: z_ret >= k,
``volume_spike``, ``range_spike``: z >= k).

The learned detector, :func:`isolation_forest_walk_forward`: an IsolationForest on the feature rows,
refitted at the start of each test range on the rows BEFORE it (never on the range it scores); a bar is
anomalous when its score falls below the training scores' ``contamination`` quantile. Bars before the
first test range get no score.
"""

from __future__ import annotations

import numpy as np

from ...market.candles import Candles
from ...strategies.edge import ANOMALY_KINDS, FEATURES, feature_matrix, features, primary, robust_z  # noqa: F401


def robust_detectors(c: Candles, f: dict[str, np.ndarray], thresholds) -> dict[str, tuple[str, float, np.ndarray]]:
    """{name: (kind, threshold, triggers)} for every anomaly kind and threshold."""
    out = {}
    for kind in ANOMALY_KINDS:
        for k in thresholds:
            out[f"{kind}@{k:g}"] = (kind, float(k), primary(kind, float(k), c, f))
    return out


def isolation_forest_walk_forward(x: np.ndarray, folds: list[tuple[int, int]], contamination: float = 0.01,
                                  max_train: int = 20_000, n_estimators: int = 100,
                                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(flags, scores) per row of ``x`` (bars x features). For each test range [a, b): fit on the finite
    rows of [0, a) (the last ``max_train`` of them), score [a, b). Rows outside every range, or with a
    NaN feature: not flagged, score NaN."""
    from sklearn.ensemble import IsolationForest

    n = len(x)
    flags = np.zeros(n, bool)
    scores = np.full(n, np.nan)
    ok = np.isfinite(x).all(axis=1)
    for a, b in folds:
        train = np.flatnonzero(ok[:a])[-max_train:]
        if len(train) < 100:
            continue
        m = IsolationForest(n_estimators=n_estimators, random_state=seed, n_jobs=1).fit(x[train])
        cut = float(np.quantile(m.score_samples(x[train]), contamination))
        rows = a + np.flatnonzero(ok[a:b])
        if len(rows):
            s = m.score_samples(x[rows])
            scores[rows] = s
            flags[rows] = s < cut
    return flags, scores
