"""Selection-bias statistics: the Deflated Sharpe Ratio and the Probability of Backtest Overfitting.

Deflated Sharpe Ratio (Bailey & Lopez de Prado, "The Deflated Sharpe Ratio: Correcting for Selection
Bias, Backtest Overfitting and Non-Normality", J. Portfolio Management 40(5), 2014). All Sharpe ratios
here are PER OBSERVATION (not annualized):

    SR0 = sqrt(V[SR_n]) * ((1 - g) * Z(1 - 1/N) + g * Z(1 - 1/(N e)))     (expected max of N trials)
    DSR = Phi( (SR - SR0) * sqrt(T - 1) / sqrt(1 - skew * SR + (kurt - 1) / 4 * SR^2) )

with g the Euler-Mascheroni constant, Z the standard normal quantile, N the number of trials
(every combination backtested), V[SR_n] the variance of the trials' Sharpe ratios, T the number of
returns of the selected strategy, skew and kurt (NOT excess) their third and fourth moments. The
paper's numerical example (N = 100, V = 1/2 annualized, T = 1250 daily, SR = 2.5 annualized,
skew = -3, kurt = 10) gives DSR = 0.9004; a test reproduces it. N counts correlated trials as
independent, which makes SR0 larger, i.e. the test more conservative.

Probability of Backtest Overfitting via combinatorially symmetric cross-validation (Bailey, Borwein,
Lopez de Prado & Zhu, "The Probability of Backtest Overfitting", J. Computational Finance 20(4),
2017): split the T x N performance matrix into S blocks of rows; for each of the C(S, S/2) ways to
pick half the blocks as in-sample (the rest out-of-sample), take the trial n* with the best
in-sample Sharpe, its relative rank w in the out-of-sample Sharpes of all N trials (w = rank /
(N + 1)), and the logit l = ln(w / (1 - w)). PBO = the fraction of splits with l <= 0 (the in-sample
winner at or below the out-of-sample median). Here the blocks arrive as sufficient statistics (sum
of returns, sum of squares, count per block and trial), so a sweep needs no T x N matrix in memory.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

EULER_GAMMA = 0.5772156649015329


def expected_max_sharpe(n_trials: int, var_sr: float) -> float:
    """SR0: the expected maximum Sharpe ratio of ``n_trials`` skill-less trials whose Sharpe ratios
    have variance ``var_sr``."""
    if n_trials < 1:
        raise ValueError("n_trials: must be >= 1")
    if n_trials == 1:
        return 0.0
    from scipy.special import ndtri  # the standard normal quantile (= scipy.stats.norm.ppf); loaded here:
    # scipy.stats takes ~0.8 s to import, and a plain backtest never needs it

    g = EULER_GAMMA
    z = (1 - g) * ndtri(1 - 1 / n_trials) + g * ndtri(1 - 1 / (n_trials * math.e))
    return math.sqrt(max(var_sr, 0.0)) * z


def probabilistic_sharpe(sr: float, sr_benchmark: float, n_obs: int, skew: float = 0.0,
                         kurt: float = 3.0) -> float:
    """PSR: probability that the true Sharpe ratio exceeds ``sr_benchmark`` (per-observation SRs)."""
    if n_obs < 2:
        return math.nan
    den = 1 - skew * sr + (kurt - 1) / 4 * sr * sr
    if den <= 0:
        return math.nan
    from scipy.special import ndtr  # the standard normal CDF (= scipy.stats.norm.cdf)

    return float(ndtr((sr - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(den)))


@dataclass(frozen=True)
class DSR:
    dsr: float            # probability that the selected strategy's true Sharpe is above SR0
    sr: float             # its per-observation Sharpe ratio
    sr0: float            # expected maximum Sharpe ratio of n_trials skill-less trials
    n_trials: int
    var_sr: float
    n_obs: int
    skew: float
    kurt: float


def deflated_sharpe(sr: float, n_obs: int, n_trials: int, var_sr: float, skew: float = 0.0,
                    kurt: float = 3.0) -> DSR:
    sr0 = expected_max_sharpe(n_trials, var_sr)
    return DSR(probabilistic_sharpe(sr, sr0, n_obs, skew, kurt), sr, sr0, n_trials, var_sr, n_obs, skew, kurt)


def moments(returns: np.ndarray) -> tuple[float, float, float]:
    """(Sharpe per observation with ddof=1, skewness, kurtosis (not excess)) of a return series."""
    r = np.asarray(returns, dtype=float)
    sd = r.std(ddof=1) if len(r) > 1 else 0.0
    if sd == 0:
        return 0.0, 0.0, 3.0
    d = r - r.mean()
    m2 = np.mean(d ** 2)
    return float(r.mean() / sd), float(np.mean(d ** 3) / m2 ** 1.5), float(np.mean(d ** 4) / m2 ** 2)


def deflated_sharpe_from_returns(returns: np.ndarray, n_trials: int, var_sr: float) -> DSR:
    sr, skew, kurt = moments(returns)
    return deflated_sharpe(sr, len(returns), n_trials, var_sr, skew, kurt)


# -- PBO ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PBO:
    pbo: float                 # fraction of splits whose in-sample winner ranks <= the OOS median
    logits: np.ndarray         # one per split
    n_splits: int
    n_trials: int
    n_blocks: int
    is_sharpe: np.ndarray      # the in-sample winner's in-sample Sharpe, per split
    oos_sharpe: np.ndarray     # ... and its out-of-sample Sharpe
    prob_oos_loss: float       # fraction of splits where the winner's OOS Sharpe < 0
    degradation_slope: float   # least-squares slope of OOS on IS Sharpe of the winners


def block_stats_from_returns(returns: np.ndarray, n_blocks: int) -> np.ndarray:
    """(N, S, 3) sums (r, r^2, count) per trial and block from a (T, N) return matrix."""
    r = np.asarray(returns, dtype=float)
    if r.ndim != 2:
        raise ValueError("returns: expected a (T, N) matrix, one column per trial")
    edges = np.linspace(0, len(r), n_blocks + 1).round().astype(int)
    out = np.zeros((r.shape[1], n_blocks, 3))
    for b in range(n_blocks):
        seg = r[edges[b]:edges[b + 1]]
        out[:, b, 0] = seg.sum(axis=0)
        out[:, b, 1] = (seg ** 2).sum(axis=0)
        out[:, b, 2] = len(seg)
    return out


def sharpe_from_sums(s1, s2, n):
    """Per-observation Sharpe ratio (ddof=1) from sums of r, r^2 and the count; 0 when flat."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        var = (s2 - s1 * s1 / n) / (n - 1)
        sd = np.sqrt(np.maximum(var, 0.0))
        return np.where(sd > 0, mean / np.where(sd > 0, sd, 1.0), 0.0)


def pbo_cscv(blocks: np.ndarray, batch: int = 512) -> PBO:
    """PBO from per-block sums ``blocks`` of shape (N trials, S blocks, 3) — from a sweep with
    ``blocks=S`` or :func:`block_stats_from_returns`. S must be even (>= 2)."""
    blocks = np.asarray(blocks, dtype=float)
    n, s, _ = blocks.shape
    if s < 2 or s % 2:
        raise ValueError(f"blocks: CSCV needs an even number of blocks >= 2, got {s}")
    if n < 2:
        raise ValueError("blocks: PBO needs at least 2 trials")
    splits = np.array([[b in c for b in range(s)] for c in itertools.combinations(range(s), s // 2)], float)
    total = blocks.sum(axis=1)  # (N, 3)
    logits, is_best, oos_best = [], [], []
    for i in range(0, len(splits), batch):
        sel = splits[i:i + batch]                          # (k, S)
        ins = np.einsum("ks,nsf->knf", sel, blocks)        # (k, N, 3)
        oos = total[None] - ins
        is_sr = sharpe_from_sums(ins[..., 0], ins[..., 1], ins[..., 2])
        oos_sr = sharpe_from_sums(oos[..., 0], oos[..., 1], oos[..., 2])
        best = np.argmax(is_sr, axis=1)
        k = np.arange(len(sel))
        star = oos_sr[k, best]
        below = (oos_sr < star[:, None]).sum(axis=1)
        ties = (oos_sr == star[:, None]).sum(axis=1)      # includes n* itself
        rank = below + (ties + 1) / 2.0                    # 1-based, ties at their mean rank
        w = rank / (n + 1)
        logits.append(np.log(w / (1 - w)))
        is_best.append(is_sr[k, best])
        oos_best.append(star)
    lg = np.concatenate(logits)
    isb, oob = np.concatenate(is_best), np.concatenate(oos_best)
    slope = float(np.polyfit(isb, oob, 1)[0]) if np.ptp(isb) > 0 else math.nan
    return PBO(float(np.mean(lg <= 0)), lg, len(lg), n, s, isb, oob, float(np.mean(oob < 0)), slope)
