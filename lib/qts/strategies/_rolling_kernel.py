"""The numba kernel of :func:`qts.strategies.rolling.rolling_mean` for long series (see there for why and
how). A module of its own, imported only when a long series needs it: numba costs ~0.5 s to import, and
functions at module level are what numba's on-disk cache can keep between processes."""

from __future__ import annotations

import math

from .. import numba_cache  # noqa: F401 - sets NUMBA_CACHE_DIR before numba is imported
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
    for t in range(k):
        tmp[t] = p[t]
    hi, lo = two_prod(q, nf)
    m = add(tmp, add(tmp, k, -hi), -lo)  # the exact residual S - q*n
    # the usual case: the residual is well inside half a spacing on either side of q (the spacing is at
    # least |q| * 2^-53 above q and 2^-54 below), so q is the correctly rounded mean
    if abs(approx(tmp, m)) < abs(q) * 1.3877787807814457e-17 * nf:  # 2^-56
        return q
    return mean_near_midpoint(p, k, nf, q, tmp)


@njit(cache=True)
def mean_near_midpoint(p, k, nf, q, tmp):
    for _ in range(64):  # q starts within a few units in the last place
        up, dn = neighbours(q)
        half_up, half_dn = (up - q) * 0.5 * nf, (q - dn) * 0.5 * nf
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


@njit(cache=True, nogil=True)  # sweeps compute several windows on threads
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


# -- the fast way, for the usual series: integers -------------------------------------------------------
# Every finite double is an integer multiple of 2^(its exponent - 53). When a series' values, as integers
# at the smallest such unit, times the window, stay below 2^62, a window's exact sum is an int64 (a running
# sum in int64 wraps harmlessly: the difference of two wrapped sums is exact when the true one fits), and
# its mean is rounded correctly with integer comparisons against the two midpoints around a first guess.

INT_MAX_WINDOW = 256  # keeps (2M + 1) * n (M < 2^53) and the shifted sum below 2^63


@njit(cache=True)
def round_div(w, n):
    """The float nearest to the integer quotient w / n (half to even), for 0 < w < 2^62, 1 <= n <= 256."""
    q = float(w) / n
    for _ in range(8):  # q starts within an ulp or two
        m, e = math.frexp(q)
        big = np.int64(m * 9007199254740992.0)  # q == big * 2^(e-53), 2^52 <= big < 2^53
        ec = e - 53
        up = 2 * big + 1                       # q's upper midpoint is up * 2^(ec-1)
        if big == 4503599627370496:            # q is a power of two: the spacing below is half
            down, down_shift = 4 * big - 1, 2  # lower midpoint (4*big - 1) * 2^(ec-2)
        else:
            down, down_shift = 2 * big - 1, 1
        # compare w with midpoint * n, both scaled to integers: w * 2^(s - ec) against midpoint * n
        if ec <= 1:
            lhs_up, rhs_up = w << (1 - ec), up * n
        else:
            lhs_up, rhs_up = w, (up * n) << (ec - 1)
        if lhs_up > rhs_up:
            q = np.nextafter(q, np.inf)
            continue
        if lhs_up == rhs_up:
            return q if big % 2 == 0 else np.nextafter(q, np.inf)
        if ec <= down_shift:
            lhs_dn, rhs_dn = w << (down_shift - ec), down * n
        else:
            lhs_dn, rhs_dn = w, (down * n) << (ec - down_shift)
        if lhs_dn < rhs_dn:
            q = np.nextafter(q, -np.inf)
            continue
        if lhs_dn == rhs_dn:
            return q if big % 2 == 0 else np.nextafter(q, -np.inf)
        return q
    return q


@njit(cache=True, nogil=True)  # sweeps compute several windows on threads
def int_kernel(units, n, unit_exp, out):
    s = np.int64(0)
    for i in range(len(units)):
        s += units[i]
        if i >= n:
            s -= units[i - n]
        if i >= n - 1:
            if s > 0:
                out[i] = math.ldexp(round_div(s, n), unit_exp)
            elif s < 0:
                out[i] = -math.ldexp(round_div(-s, n), unit_exp)
            else:
                out[i] = 0.0
