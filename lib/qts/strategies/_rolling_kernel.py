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
# Every finite double is an integer multiple of 2^(its exponent - 53). When a series' values, as integers u
# at the smallest such unit, stay below 2^62, each is split as u = h * 2^31 + l (0 <= l < 2^31) and the
# window's h and l are summed in int64: both sums are exact (for windows under 2^22), and so are the doubles
# H * 2^31 and L, whose exact sum is the window's sum W. A first guess q = (H * 2^31 + L) / n is within an
# ulp or two of W / n; the residual W - q * n, computed exactly enough (two-sum, Dekker's product), says
# whether q is the correctly rounded mean, or its neighbour is. Only a mean within ~2^-40 of a rounding
# midpoint (a tie, say) goes the slow, exact way of :func:`mean` on the partials.

SPLIT = 2147483648.0  # 2^31
LOW_MASK = 2147483647
MAX_SPLIT_WINDOW = 1 << 22  # |H| <= n * 2^31 stays below 2^53: H * 2^31 is an exact double
MARGIN = 1.0 - 2.0 ** -40   # the residual's own error is below 2^-50 of the bounds it is checked against


NO_UNITS = 1 << 30


@njit(cache=True)
def to_units(x, out):
    """``out[i] = x[i] / 2^e`` as int64 for the smallest unit 2^e of the series (every finite double is a
    whole number of 2^(its exponent - 53)), returning e; or NO_UNITS when a value is not finite or
    subnormal, the values span more than ~2^9 in magnitude (binary exponents over 9 apart: some would not
    fit 62 bits), or e < -946."""
    lo = 4096
    hi = -1
    for i in range(x.shape[0]):
        v = x[i]
        if not np.isfinite(v):
            return NO_UNITS
        if v != 0.0:
            b = (np.float64(v).view(np.int64) >> 52) & 0x7FF
            if b == 0:
                return NO_UNITS
            lo = b if b < lo else lo
            hi = b if b > hi else hi
    if hi < 0:
        out[:] = 0
        return 0
    if hi - lo > 9:
        return NO_UNITS
    unit_exp = lo - 1075  # frexp's exponent (b - 1022) minus 53
    if unit_exp < -946:
        return NO_UNITS
    scale = math.ldexp(1.0, -unit_exp)
    for i in range(x.shape[0]):
        out[i] = np.int64(x[i] * scale)  # exact: a power of two times a value that is a multiple of the unit
    return unit_exp


@njit(cache=True, inline="always")
def split_mean(s, err, nf, inv, p, tmp):
    """The correctly rounded (s + err) / n, for s, err a two-sum (s + err is exactly the window's sum S);
    ``inv`` ~ 1 / n (any rounding: it only makes the first guesses)."""
    neg = s < 0.0
    if neg:
        s = -s
        err = -err
    if s == 0.0:
        return 0.0
    q0 = s * inv
    hi, lo = two_prod(q0, nf)
    r0 = ((s - hi) - lo) + err  # ~ S - q0 * n; s - hi is exact (Sterbenz: q0 * n is within an ulp or two of s)
    q = q0 + r0 * inv           # one Newton step: the nearest double, unless S / n is next to a midpoint
    r = r0 - (q - q0) * nf      # (q - q0) * n is exact: a few ulps times an integer below 2^22
    bits = np.float64(q).view(np.int64)
    expo = (bits >> 52) & 0x7FF
    up = np.int64((expo - 52) << 52).view(np.float64)  # the spacing above q (q positive, normal)
    below_pow2 = (r < 0.0) & ((bits & 0xFFFFFFFFFFFFF) == 0)  # below a power of two the spacing halves
    half = up * 0.5 * nf * (1.0 - 0.5 * below_pow2)  # n x the distance to the midpoint on r's side (exact)
    in_range = (expo > 54) & (expo < 2045)
    if (abs(r) < half * MARGIN) & in_range:  # no branch on the sign of r: a coin flip
        return -q if neg else q
    q = _near_midpoint(s, err, nf, q, r, bits, up, below_pow2, half, in_range, p, tmp)
    return -q if neg else q


@njit(cache=True)  # not inlined: the rare way out of split_mean stays out of its loop
def _near_midpoint(s, err, nf, q, r, bits, up, below_pow2, half, in_range, p, tmp):
    if in_range and abs(r) < half / MARGIN:
        # next to that midpoint (often exactly on it: prices with few digits tie a lot): the exact sign
        # of S - (the midpoint) * n, from four doubles whose sum it is
        hi, lo = two_prod(q, nf)
        k = add(p, 0, s - hi)  # exact (Sterbenz)
        k = add(p, k, err)
        k = add(p, k, -lo)
        k = add(p, k, -half if r > 0.0 else half)
        t = sign(p, k)
        side = 1 if r > 0.0 else -1
        nb = q + up if r > 0.0 else q - up * (1.0 - 0.5 * below_pow2)
        if t == 0:  # a tie: to the even one
            return q if (bits & 1) == 0 else nb
        return nb if t == side else q
    # anything else (not expected: the Newton step is within a rounding of the mean): the general exact way
    if err != 0.0:
        p[0] = err
        p[1] = s
        k = 2
    else:
        p[0] = s
        k = 1
    return mean(p, k, int(nf), tmp)


@njit(cache=True, nogil=True)  # sweeps compute several windows on threads
def split_kernel(units, n, unit_exp, out):
    h = np.int64(0)
    low = np.int64(0)
    nf = float(n)
    p = np.empty(8)
    tmp = np.empty(16)
    inv = 1.0 / nf
    scale = math.ldexp(1.0, unit_exp)  # a normal power of two (the caller keeps unit_exp >= -946): exact scaling
    for i in range(len(units)):
        u = units[i]
        h += u >> 31
        low += u & LOW_MASK
        if i >= n:
            v = units[i - n]
            h -= v >> 31
            low -= v & LOW_MASK
        if i >= n - 1:
            a = float(h) * SPLIT
            b = float(low)
            s = a + b
            bb = s - a
            err = (a - (s - bb)) + (b - bb)  # two-sum: a + b == s + err exactly
            out[i] = split_mean(s, err, nf, inv, p, tmp) * scale
