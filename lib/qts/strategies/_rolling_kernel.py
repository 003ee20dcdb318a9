"""The numba kernel of :func:`qts.strategies.rolling.rolling_mean` for long series (see there for why and
how). A module of its own, imported only when a long series needs it: numba costs ~0.5 s to import, and
functions at module level are what numba's on-disk cache can keep between processes."""

from __future__ import annotations

import math

from ..research import kernels  # noqa: F401 - sets NUMBA_CACHE_DIR before numba compiles anything
import numpy as np  # noqa: E402
from numba import njit  # noqa: E402


@njit(cache=True, inline="always")
def add(p, k, x):
    # p[0:k]: non-overlapping partials, increasing magnitude; add x exactly (two-sum, as math.fsum)
    j = 0
    for t in range(k):
        y = p[t]
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            p[j] = lo
            j += 1
        x = hi
    p[j] = x
    return j + 1

@njit(cache=True, inline="always")
def sign(p, k):
    for t in range(k - 1, -1, -1):  # the largest non-zero partial decides
        if p[t] > 0.0:
            return 1
        if p[t] < 0.0:
            return -1
    return 0

@njit(cache=True, inline="always")
def approx(p, k):
    s = 0.0
    for t in range(k):
        s += p[t]
    return s

@njit(cache=True, inline="always")
def two_prod(a, b):  # Dekker: a * b == x + y exactly
    x = a * b
    c = 134217729.0 * a
    ah = c - (c - a)
    al = a - ah
    c = 134217729.0 * b
    bh = c - (c - b)
    bl = b - bh
    return x, al * bl - (((x - ah * bh) - al * bh) - ah * bl)

@njit(cache=True, inline="always")
def is_even(q):
    m, _ = math.frexp(q)
    return (m * 9007199254740992.0) % 2.0 == 0.0  # the last bit of the 53-bit significand

@njit(cache=True, inline="always")
def neighbours(q):
    # the floats just above and below q (np.nextafter, without its call cost on the hot path)
    if not 1e-290 < abs(q) < 1e300:  # zero, subnormal-adjacent, huge or not finite: the slow, general way
        return np.nextafter(q, np.inf), np.nextafter(q, -np.inf)
    m, e = math.frexp(q)  # |m| in [0.5, 1)
    ulp = math.ldexp(1.0, e - 53)
    if abs(m) == 0.5:  # a power of two: the spacing below is half the spacing above
        return (q + ulp, q - ulp * 0.5) if q > 0 else (q + ulp * 0.5, q - ulp)
    return q + ulp, q - ulp

@njit(cache=True, inline="always")
def side(p, k, q, nf, half, tmp):
    # sign of (S - q*n - half), exactly
    for t in range(k):
        tmp[t] = p[t]
    hi, lo = two_prod(q, nf)
    m = add(tmp, k, -hi)
    m = add(tmp, m, -lo)
    m = add(tmp, m, -half)
    return sign(tmp, m)

@njit(cache=True, inline="always")
def mean(p, k, n, tmp):
    nf = float(n)
    q = approx(p, k) / nf
    for _ in range(64):  # q starts within a few units in the last place
        up, dn = neighbours(q)
        half_up, half_dn = (up - q) * 0.5 * nf, (q - dn) * 0.5 * nf
        for t in range(k):
            tmp[t] = p[t]
        hi, lo = two_prod(q, nf)
        m = add(tmp, add(tmp, k, -hi), -lo)  # the exact residual S - q*n
        if abs(approx(tmp, m)) < 0.5 * min(half_up, half_dn):
            return q  # far from both midpoints: q is the correctly rounded mean (the usual case)
        above = side(p, k, q, nf, half_up, tmp)    # S/n against the midpoint to q's upper neighbour
        if above > 0:
            q = up
            continue
        if above == 0:
            return q if is_even(q) else up
        below = side(p, k, q, nf, -half_dn, tmp)   # ... and to its lower neighbour
        if below < 0:
            q = dn
            continue
        if below == 0:
            return q if is_even(q) else dn
        return q
    return q

@njit(cache=True)
def kernel(x, n, out):
    p = np.empty(128)
    tmp = np.empty(128)
    k = 0
    bad = 0
    for i in range(len(x)):
        v = x[i]
        if math.isfinite(v):
            k = add(p, k, v)
        else:
            bad += 1
        if i >= n:
            old = x[i - n]
            if math.isfinite(old):
                k = add(p, k, -old)
            else:
                bad -= 1
        if k > 90:  # rebuild from the window itself (exact either way): keeps the partials bounded
            k = 0
            for t in range(max(0, i - n + 1), i + 1):
                if math.isfinite(x[t]):
                    k = add(p, k, x[t])
        if i >= n - 1:
            out[i] = mean(p, k, n, tmp) if bad == 0 else np.nan
