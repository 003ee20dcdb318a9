"""Triple-barrier labels (Lopez de Prado, Advances in Financial Machine Learning, ch. 3).

An event at bar t (a primary signal's trigger) looks at the closes of bars t+1 .. t+horizon: the first
close at or above the upper barrier ``close_t (1 + tp_mult x sigma_t x sqrt(horizon))`` is a take profit
(label 1), the first at or below the lower ``close_t (1 - sl_mult x sigma_t x sqrt(horizon))`` a stop
loss (label 0); neither by t+horizon: the time barrier, label 1 when close_{t+horizon} > close_t.
``end`` is the bar the label became known; a label that needs bars past the data is NaN (unknown), so
a label only ever uses data up to its own ``end`` (what the meta-model's purging relies on). The
barriers are :func:`qts.strategies.edge.barriers`, the ones ``edge_meta`` exits by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...strategies.edge import barriers

TP, SL, TIME = 1, -1, 0


@dataclass
class Labels:
    events: np.ndarray   # bar of each event
    label: np.ndarray    # 1.0 / 0.0, NaN when unknown
    end: np.ndarray      # bar the label became known (-1 when unknown)
    kind: np.ndarray     # TP / SL / TIME (0 when unknown too: check ``known``)
    ret: np.ndarray      # close_end / close_t - 1 (NaN when unknown)

    @property
    def known(self) -> np.ndarray:
        return ~np.isnan(self.label)

    def stats(self) -> dict:
        k = self.known
        n = int(k.sum())
        return {"events": int(len(self.events)), "labelled": n,
                "take_profit": int((self.kind[k] == TP).sum()), "stop_loss": int((self.kind[k] == SL).sum()),
                "time": int((self.kind[k] == TIME).sum()),
                "positive_rate": float(self.label[k].mean()) if n else None,
                "mean_return": float(self.ret[k].mean()) if n else None}


def triple_barrier(close: np.ndarray, events: np.ndarray, sigma: np.ndarray, tp_mult: float, sl_mult: float,
                   horizon: int) -> Labels:
    close = np.asarray(close, dtype=np.float64)
    events = np.asarray(events, dtype=np.int64)
    up, dn = barriers(close, sigma, tp_mult, sl_mult, horizon)
    n = len(close)
    m = len(events)
    label = np.full(m, np.nan)
    end = np.full(m, -1, np.int64)
    kind = np.zeros(m, np.int64)
    ret = np.full(m, np.nan)
    for j, t in enumerate(events):
        if not (np.isfinite(up[t]) and np.isfinite(dn[t])):
            continue
        path = close[t + 1: min(n, t + horizon + 1)]
        hit_up = np.flatnonzero(path >= up[t])
        hit_dn = np.flatnonzero(path <= dn[t])
        iu = hit_up[0] if len(hit_up) else horizon
        idn = hit_dn[0] if len(hit_dn) else horizon
        if iu < horizon and iu < idn:
            e, lab, kd = t + 1 + iu, 1.0, TP
        elif idn < horizon and idn < iu:
            e, lab, kd = t + 1 + idn, 0.0, SL
        elif t + horizon < n:
            e, kd = t + horizon, TIME
            lab = 1.0 if close[e] > close[t] else 0.0
        else:
            continue  # needs bars past the data
        label[j], end[j], kind[j], ret[j] = lab, e, kd, close[e] / close[t] - 1.0
    return Labels(events, label, end, kind, ret)
