"""Risk figures as pure functions: PnL, drawdown, the Probabilistic Sharpe Ratio, percentiles and
rates. No I/O, no scipy: the monitors, reports and anyone else can reuse them and test them alone.

Conventions (stated, because every library picks differently):
- returns are simple returns between consecutive NAV samples, per sampling period (not annualised);
- the Sharpe ratio is mean / sample standard deviation (n - 1 in the denominator);
- skewness g1 = m3 / m2^1.5 and kurtosis b2 = m4 / m2^2 (NOT excess: a normal sample gives ~3),
  with m_k the k-th central moment averaged over n (scipy.stats.skew / kurtosis(fisher=False)).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from statistics import NormalDist

_STD_NORMAL = NormalDist()


def _floats(values: Iterable[float]) -> list[float]:
    return [float(v) for v in values]


def simple_returns(navs: Sequence[float]) -> list[float]:
    """r_i = nav_i / nav_(i-1) - 1. A non-positive NAV has no meaningful return."""
    xs = _floats(navs)
    if any(x <= 0 for x in xs[:-1]):
        raise ValueError("NAV must be positive to compute returns")
    return [b / a - 1 for a, b in itertools.pairwise(xs)]


def pnl_fraction(navs: Sequence[float], start: float | None = None) -> float:
    """The last NAV against `start` (default: the first NAV), as a fraction: -0.05 is -5%."""
    xs = _floats(navs)
    if not xs:
        raise ValueError("no NAV samples")
    base = xs[0] if start is None else float(start)
    if base <= 0:
        raise ValueError(f"start NAV must be positive, got {base}")
    return xs[-1] / base - 1


def max_drawdown(navs: Sequence[float]) -> float:
    """The largest fall from the running peak, as a fraction of that peak (0.15 is 15%)."""
    peak = -math.inf
    worst = 0.0
    for nav in _floats(navs):
        peak = max(peak, nav)
        if peak > 0:
            worst = max(worst, (peak - nav) / peak)
    return worst


def _central_moments(xs: list[float]) -> tuple[float, float, float, float]:
    n = len(xs)
    mean = sum(xs) / n
    dev = [x - mean for x in xs]
    m2 = sum(d * d for d in dev) / n
    m3 = sum(d**3 for d in dev) / n
    m4 = sum(d**4 for d in dev) / n
    return mean, m2, m3, m4


def sharpe_ratio(returns: Sequence[float]) -> float:
    """Per-period Sharpe ratio: mean / sample standard deviation (ddof 1), no risk-free rate."""
    xs = _floats(returns)
    if len(xs) < 2:
        raise ValueError("the Sharpe ratio needs at least 2 returns")
    mean = sum(xs) / len(xs)
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    if var <= 0:
        raise ValueError("returns have zero variance: the Sharpe ratio is undefined")
    return mean / math.sqrt(var)


def skewness(returns: Sequence[float]) -> float:
    """Sample skewness g1 = m3 / m2^1.5."""
    xs = _floats(returns)
    if len(xs) < 2:
        raise ValueError("skewness needs at least 2 returns")
    _, m2, m3, _ = _central_moments(xs)
    if m2 <= 0:
        raise ValueError("returns have zero variance: skewness is undefined")
    return m3 / m2**1.5


def kurtosis(returns: Sequence[float]) -> float:
    """Sample kurtosis b2 = m4 / m2^2, not excess (a normal distribution has 3)."""
    xs = _floats(returns)
    if len(xs) < 2:
        raise ValueError("kurtosis needs at least 2 returns")
    _, m2, _, m4 = _central_moments(xs)
    if m2 <= 0:
        raise ValueError("returns have zero variance: kurtosis is undefined")
    return m4 / m2**2


def psr_defined(returns: Sequence[float]) -> bool:
    """True when the PSR can be computed: at least 3 returns that are not all equal."""
    xs = _floats(returns)
    return len(xs) >= 3 and max(xs) > min(xs)


def probabilistic_sharpe_ratio(returns: Sequence[float], sr_benchmark: float = 0.0) -> float:
    """Bailey & López de Prado (2012): the probability that the true Sharpe ratio exceeds
    `sr_benchmark` (per period, like the returns), given the sample's length, skew and tails:

        PSR = Phi( (SR - SR*) * sqrt(n - 1) / sqrt(1 - g3*SR + (g4 - 1)/4 * SR^2) )

    with SR the sample Sharpe ratio, g3 its skewness and g4 its (non-excess) kurtosis.

    Raises ValueError for fewer than 3 returns or returns with zero variance.
    """
    xs = _floats(returns)
    if len(xs) < 3:
        raise ValueError(f"the PSR needs at least 3 returns, got {len(xs)}")
    sr = sharpe_ratio(xs)
    g3 = skewness(xs)
    g4 = kurtosis(xs)
    # Pearson's inequality (g4 >= 1 + g3²) keeps this >= (1 - g3·SR/2)² >= 0.
    denominator = 1 - g3 * sr + (g4 - 1) / 4 * sr**2
    numerator = (sr - sr_benchmark) * math.sqrt(len(xs) - 1)
    if denominator <= 0:  # degenerate sample: the estimate is certain, only its sign matters
        return 1.0 if numerator > 0 else 0.0 if numerator < 0 else 0.5
    return _STD_NORMAL.cdf(numerator / math.sqrt(denominator))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default)."""
    xs = sorted(_floats(values))
    if not xs:
        raise ValueError("no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {q}")
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def p95(values: Sequence[float]) -> float:
    return percentile(values, 95)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def per_hour(
    times: Iterable[datetime], now: datetime, window: timedelta = timedelta(hours=1)
) -> float:
    """Occurrences in the trailing window (now - window, now], scaled to a rate per hour."""
    count = sum(1 for t in times if now - window < t <= now)
    return count * 3600 / window.total_seconds()
