"""The edge factory's runnable candidate: an anomaly-triggered entry, meta-labeled, sized by confidence.

Numpy only (the loop imports it; scikit-learn stays in :mod:`qts.research.edges`, which FITS the model
whose coefficients end up here as parameters).

Per bar ``i`` (every value uses candles up to ``i`` only):

- features (:func:`features`): robust z-scores of the log return, the log volume and the log
  high-low range (the spread proxy) against the median / MAD of the ``window`` bars BEFORE ``i``;
  momentum (log return over 12 bars over the robust return scale x sqrt(12)); and the ratio of the
  last 12 bars' return standard deviation to the robust scale. ``sigma`` = 1.4826 x MAD of the
  returns (the robust per-bar volatility the barriers use).
- primary signal (:func:`primary`): ``ret_drop`` z_ret <= -threshold, ``ret_spike`` z_ret >= threshold,
  ``volume_spike`` z_vol >= threshold, ``range_spike`` z_range >= threshold, or the entry of a
  built-in strategy (its name, default parameters).
- meta-label: probability p = logistic(coef . (x - mean) / scale + intercept); no coefficients: p = 1.
  The strategy acts on a primary trigger when p >= ``min_prob`` and enters with confidence p.
- exit (the triple barrier of the labels, :func:`barriers`): from the last acted trigger L, with
  sigma_L x sqrt(horizon) as the unit: close >= close_L (1 + tp_mult x unit) (take profit), close <=
  close_L (1 - sl_mult x unit) (stop loss), or ``horizon`` bars after L (time). A new acted trigger
  restarts the barriers. Stateless (a function of the candles, not of the position), so the loop's
  ``decide`` on its last ``lookback`` candles and a backtest over the whole year agree.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..market.candles import Candles
from .base import Strategy

FEATURES = ("z_ret", "z_vol", "z_range", "mom", "vol_ratio")
ANOMALY_KINDS = ("ret_drop", "ret_spike", "volume_spike", "range_spike")
MOM_BARS = 12
MAD_K = 1.4826  # MAD x this = the standard deviation of a normal distribution
_CHUNK = 8192   # rows of sliding windows per block (bounded memory on a year of 5-minute bars)


def trailing_median_mad(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Median and MAD of x[i - window : i] (the ``window`` values BEFORE i); NaN for i < window or
    when the window holds a NaN. Each window is computed on its own: the same bits whatever the start."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    med = np.full(n, np.nan)
    mad = np.full(n, np.nan)
    if n <= window:
        return med, mad
    v = np.lib.stride_tricks.sliding_window_view(x, window)[: n - window]  # row k: x[k : k + window] -> bar k + window
    h = window // 2
    for a in range(0, len(v), _CHUNK):
        b = np.sort(v[a:a + _CHUNK], axis=1)  # NaN sorts last
        m = b[:, h] if window % 2 else 0.5 * (b[:, h - 1] + b[:, h])
        d = np.abs(b - m[:, None])
        if window % 2:
            md = np.partition(d, h, axis=1)[:, h]
        else:
            d = np.partition(d, (h - 1, h), axis=1)
            md = 0.5 * (d[:, h - 1] + d[:, h])
        bad = np.isnan(b[:, -1])
        m[bad] = np.nan
        md[bad] = np.nan
        med[window + a: window + a + len(b)] = m
        mad[window + a: window + a + len(b)] = md
    return med, mad


def robust_z(x: np.ndarray, window: int) -> np.ndarray:
    """(x_i - median) / (1.4826 x MAD) over the ``window`` values before i; 0 where the MAD is 0."""
    med, mad = trailing_median_mad(x, window)
    scale = MAD_K * mad
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(scale > 0, (np.asarray(x, dtype=np.float64) - med) / scale, 0.0)
    z[np.isnan(med)] = np.nan
    return z


_CACHE: OrderedDict = OrderedDict()  # (window, digest of the candles) -> features; sweeps and folds reuse them
_CACHE_SIZE = 4


def _digest(c: Candles) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for a in (c.ts, c.high, c.low, c.close, c.volume):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.digest()


def features(c: Candles, window: int) -> dict[str, np.ndarray]:
    """The meta-model's inputs (FEATURES) plus ``sigma``; all trailing, NaN while warming up. The same
    candles (by content) again: the same (read-only) arrays, from a small cache."""
    key = (int(window), len(c), int(c.timeframe_ms), _digest(c))
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return dict(hit)
    f = _features(c, window)
    for a in f.values():
        a.flags.writeable = False
    _CACHE[key] = f
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return dict(f)


def _features(c: Candles, window: int) -> dict[str, np.ndarray]:
    close = np.asarray(c.close, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.r_[np.nan, np.diff(np.log(close))]
        lv = np.log1p(np.maximum(np.asarray(c.volume, dtype=np.float64), 0.0))
        rng = np.log(np.maximum((np.asarray(c.high, dtype=np.float64) - c.low) / close, 1e-9))
    med, mad = trailing_median_mad(r, window)
    sigma = MAD_K * mad
    with np.errstate(invalid="ignore", divide="ignore"):
        z_ret = np.where(sigma > 0, (r - med) / sigma, 0.0)
        z_ret[np.isnan(med)] = np.nan
        mom = np.full(len(close), np.nan)
        if len(close) > MOM_BARS:
            mom[MOM_BARS:] = np.log(close[MOM_BARS:] / close[:-MOM_BARS])
        mom = np.where(sigma > 0, mom / (sigma * math.sqrt(MOM_BARS)), 0.0)
        mom[np.isnan(sigma)] = np.nan
        sd = np.full(len(close), np.nan)
        if len(close) >= MOM_BARS + 1:
            w = np.lib.stride_tricks.sliding_window_view(r, MOM_BARS)
            sd[MOM_BARS - 1:] = w.std(axis=1)
        vol_ratio = np.where(sigma > 0, sd / sigma, 0.0)
        vol_ratio[np.isnan(sigma) | np.isnan(sd)] = np.nan
    return {"z_ret": z_ret, "z_vol": robust_z(lv, window), "z_range": robust_z(rng, window), "mom": mom,
            "vol_ratio": vol_ratio, "sigma": sigma}


def feature_matrix(f: dict[str, np.ndarray]) -> np.ndarray:
    return np.column_stack([f[k] for k in FEATURES])


def primary(kind: str, threshold: float, c: Candles, f: dict[str, np.ndarray]) -> np.ndarray:
    """The primary signal's triggers (booleans per bar)."""
    with np.errstate(invalid="ignore"):
        if kind == "ret_drop":
            return f["z_ret"] <= -threshold
        if kind == "ret_spike":
            return f["z_ret"] >= threshold
        if kind == "volume_spike":
            return f["z_vol"] >= threshold
        if kind == "range_spike":
            return f["z_range"] >= threshold
    from .library import BUILTIN

    e, _, _ = BUILTIN[kind]().signals(c)
    return np.asarray(e, dtype=bool) if np.asarray(e).dtype == np.bool_ else np.nan_to_num(e) > 0


def barriers(close: np.ndarray, sigma: np.ndarray, tp_mult: float, sl_mult: float,
             horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower barrier prices set at each bar (for an event at that bar)."""
    unit = sigma * math.sqrt(horizon)
    return close * (1.0 + tp_mult * unit), close * (1.0 - sl_mult * unit)


def probability(x: np.ndarray, coef, intercept: float, mean, scale) -> np.ndarray:
    """Logistic regression on standardized features; NaN where a feature is NaN."""
    if not len(coef):
        return np.where(np.isnan(x).any(axis=1), np.nan, 1.0)
    z = (x - np.asarray(mean)) / np.asarray(scale)
    s = z @ np.asarray(coef, dtype=np.float64) + intercept
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-s))


class EdgeMeta(Strategy):
    """Edge factory candidate: anomaly (or strategy) trigger, meta-labeled, sized by the probability."""

    name = "edge_meta"

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        primary: str = Field("ret_drop", description="an anomaly kind or a built-in strategy's name")
        threshold: float = Field(3.0, ge=0.5, le=20.0, description="robust z-score that triggers")
        window: int = Field(288, ge=20, le=5000, description="bars of the trailing median / MAD")
        horizon: int = Field(24, ge=1, le=2000, description="time barrier, bars")
        tp_mult: float = Field(1.0, gt=0, le=20.0, description="take profit, sigma x sqrt(horizon) units")
        sl_mult: float = Field(1.0, gt=0, le=20.0, description="stop loss, sigma x sqrt(horizon) units")
        min_prob: float = Field(0.5, ge=0.0, lt=1.0, description="act when the meta-model's p >= this")
        coef: tuple[float, ...] = Field((), description="logistic coefficients, one per FEATURES; () = no model")
        intercept: float = 0.0
        mean: tuple[float, ...] = ()
        scale: tuple[float, ...] = ()

        @model_validator(mode="after")
        def _model(self):
            from .library import BUILTIN

            if self.primary not in ANOMALY_KINDS and self.primary not in BUILTIN:
                raise ValueError(f"primary: {self.primary!r} is neither an anomaly kind "
                                 f"({', '.join(ANOMALY_KINDS)}) nor a built-in strategy")
            if self.coef:
                n = len(FEATURES)
                for k in ("coef", "mean", "scale"):
                    if len(getattr(self, k)) != n:
                        raise ValueError(f"{k}: needs {n} values ({', '.join(FEATURES)}), got {len(getattr(self, k))}")
                if not all(math.isfinite(v) for v in (*self.coef, *self.mean, self.intercept)):
                    raise ValueError("coef: model values must be finite")
                if not all(math.isfinite(v) and v > 0 for v in self.scale):
                    raise ValueError("scale: must be finite and > 0")
            return self

    @property
    def lookback(self) -> int:
        extra = 0
        if self.params.primary not in ANOMALY_KINDS:
            from .library import BUILTIN

            extra = BUILTIN[self.params.primary]().lookback
        return max(self.params.window + MOM_BARS + 2, extra) + self.params.horizon + 2

    def signals(self, c: Candles):
        p = self.params
        f = features(c, p.window)
        trig = primary(p.primary, p.threshold, c, f)
        prob = probability(feature_matrix(f), p.coef, p.intercept, p.mean, p.scale)
        with np.errstate(invalid="ignore"):
            acted = trig & np.isfinite(prob) & (prob >= p.min_prob) & np.isfinite(f["sigma"]) & (f["sigma"] > 0)
        conf = np.where(acted, prob, 0.0)
        close = np.asarray(c.close, dtype=np.float64)
        up, dn = barriers(close, f["sigma"], p.tp_mult, p.sl_mult, p.horizon)
        idx = np.arange(len(close))
        last = np.maximum.accumulate(np.where(acted, idx, -1)) if len(close) else idx
        has = last >= 0
        L = np.where(has, last, 0)
        with np.errstate(invalid="ignore"):
            hit = (close >= up[L]) | (close <= dn[L]) | (idx - L >= p.horizon)
        exit_ = ~has | ((idx > L) & hit)
        ind = {k: f[k] for k in ("z_ret", "z_vol", "z_range")}
        ind["meta_prob"] = np.where(trig, prob, np.nan)
        return conf, exit_, ind
