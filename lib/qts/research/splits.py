"""Train/test splits of a bar range for walk-forward analysis and purged cross-validation.

Bars are half-open index ranges ``(start, stop)``. A strategy's decision at bar i can depend on
bars up to i and its trade can last several bars, so a training range that ends right where the
test range begins may hold trades still open inside the test (leakage):
- ``purge``: bars dropped from training right BEFORE each test range (at least the longest
  holding period you expect, or the label horizon);
- ``embargo``: bars dropped from training right AFTER each test range (only when training data
  follows the test, as in k-fold; in walk-forward the training data is always in the past).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Split:
    train: tuple[tuple[int, int], ...]   # one or more (start, stop) ranges
    test: tuple[int, int]

    @property
    def train_bars(self) -> int:
        return sum(b - a for a, b in self.train)

    def train_indices(self):
        import numpy as np

        return np.concatenate([np.arange(a, b) for a, b in self.train]) if self.train else np.empty(0, int)


def walk_forward(n_bars: int, train: int, test: int, step: int | None = None, anchored: bool = False,
                 purge: int = 0, start: int = 0) -> list[Split]:
    """Folds over bars [start, n_bars): train on ``train`` bars (anchored: everything from ``start``),
    skip ``purge`` bars, test on the next ``test`` bars; move on by ``step`` (default ``test``, so
    the test ranges tile the data without overlap). A last test range shorter than ``test`` is
    dropped."""
    if train <= 0 or test <= 0 or purge < 0:
        raise ValueError("walk_forward: train and test must be > 0, purge >= 0")
    step = step or test
    if step <= 0:
        raise ValueError("walk_forward: step must be > 0")
    out = []
    tr_start = start
    while True:
        tr_stop = tr_start + train
        te_start = tr_stop + purge
        te_stop = te_start + test
        if te_stop > n_bars:
            break
        out.append(Split(((start if anchored else tr_start, tr_stop),), (te_start, te_stop)))
        tr_start += step
    if not out:
        raise ValueError(f"walk_forward: {n_bars - start} bars cannot hold train {train} + purge {purge} "
                         f"+ test {test}")
    return out


def purged_kfold(n_bars: int, k: int, purge: int = 0, embargo: int = 0, start: int = 0) -> list[Split]:
    """K contiguous test folds over [start, n_bars); each trains on the rest minus ``purge`` bars
    before the test fold and ``embargo`` bars after it (Lopez de Prado, AFML ch. 7)."""
    if k < 2:
        raise ValueError("purged_kfold: k must be >= 2")
    if purge < 0 or embargo < 0:
        raise ValueError("purged_kfold: purge and embargo must be >= 0")
    n = n_bars - start
    if n < k:
        raise ValueError(f"purged_kfold: {n} bars cannot make {k} folds")
    edges = [start + round(i * n / k) for i in range(k + 1)]
    out = []
    for i in range(k):
        a, b = edges[i], edges[i + 1]
        train = []
        if a - purge > start:
            train.append((start, a - purge))
        if b + embargo < n_bars:
            train.append((b + embargo, n_bars))
        out.append(Split(tuple(train), (a, b)))
    return out
