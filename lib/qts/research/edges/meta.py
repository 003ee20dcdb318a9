"""Meta-labeling: a model that decides whether to act on a primary signal, and how confidently.

Walk-forward with purging (:func:`walk_forward_meta`): for each test range [a, b) of bars, the model is
fitted on the events whose label was KNOWN before a (``end < a - embargo``; an event whose barrier
reaches into the test range is purged), then predicts the probability that each event in [a, b) is a
winner. Those out-of-sample probabilities are all the metrics here see.

The model is a logistic regression on standardized features (scikit-learn), exported as plain numbers
(:func:`fit_logistic`: coef, intercept, mean, scale) so that ``edge_meta`` computes the same probability
with numpy alone in the trading loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def wf_ranges(start: int, stop: int, n_folds: int) -> list[tuple[int, int]]:
    """``n_folds`` contiguous test ranges covering [start, stop)."""
    e = np.linspace(start, stop, n_folds + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(e[:-1], e[1:]) if b > a]


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float = 1.0) -> dict:
    """{coef, intercept, mean, scale} of a logistic regression on (x - mean) / scale."""
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    m = LogisticRegression(C=c, max_iter=1000).fit((x - mean) / scale, y)
    return {"coef": tuple(float(v) for v in m.coef_[0]), "intercept": float(m.intercept_[0]),
            "mean": tuple(float(v) for v in mean), "scale": tuple(float(v) for v in scale)}


def predict(model: dict, x: np.ndarray) -> np.ndarray:
    from ...strategies.edge import probability

    return probability(x, model["coef"], model["intercept"], model["mean"], model["scale"])


@dataclass
class MetaResult:
    oos_prob: np.ndarray                       # per event, NaN where no fold predicted it
    folds: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


def walk_forward_meta(x_events: np.ndarray, events: np.ndarray, labels: np.ndarray, ends: np.ndarray,
                      ranges: list[tuple[int, int]], embargo: int = 0, min_train: int = 30,
                      min_prob: float = 0.5) -> MetaResult:
    """Out-of-sample probabilities of the events (rows of ``x_events`` at bars ``events``)."""
    prob = np.full(len(events), np.nan)
    ok = np.isfinite(x_events).all(axis=1) & ~np.isnan(labels)
    folds = []
    for a, b in ranges:
        tr = ok & (ends >= 0) & (ends < a - embargo)
        te = np.isfinite(x_events).all(axis=1) & (events >= a) & (events < b)
        info = {"test": [a, b], "train_events": int(tr.sum()), "test_events": int(te.sum())}
        if tr.sum() >= min_train and len(np.unique(labels[tr])) == 2 and te.any():
            model = fit_logistic(x_events[tr], labels[tr])
            prob[te] = predict(model, x_events[te])
            info["fitted"] = True
        else:
            info["fitted"] = False
        folds.append(info)
    return MetaResult(prob, folds, oos_metrics(prob, labels, min_prob))


def oos_metrics(prob: np.ndarray, labels: np.ndarray, min_prob: float = 0.5) -> dict:
    """AUC, Brier score, log loss, base rate and the precision of acting when p >= min_prob."""
    m = ~np.isnan(prob) & ~np.isnan(labels)
    p, y = prob[m], labels[m]
    out = {"events": int(m.sum()), "base_rate": float(y.mean()) if len(y) else None, "auc": None,
           "brier": None, "log_loss": None, "acted": 0, "precision": None, "lift": None, "min_prob": min_prob}
    if not len(y):
        return out
    pc = np.clip(p, 1e-12, 1 - 1e-12)
    out["brier"] = float(np.mean((p - y) ** 2))
    out["log_loss"] = float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)))
    if len(np.unique(y)) == 2:
        from sklearn.metrics import roc_auc_score

        out["auc"] = float(roc_auc_score(y, p))
    act = p >= min_prob
    out["acted"] = int(act.sum())
    if act.any():
        out["precision"] = float(y[act].mean())
        if out["base_rate"]:
            out["lift"] = out["precision"] / out["base_rate"]
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
