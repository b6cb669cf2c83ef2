"""The pure risk figures against values computed independently of the code under test."""

from __future__ import annotations

import math
import random
from datetime import timedelta

import pytest

from rollbot.clock import ManualClock
from rollbot.commands.risk.metrics import (
    kurtosis,
    max_drawdown,
    median,
    p95,
    per_hour,
    pnl_fraction,
    probabilistic_sharpe_ratio,
    sharpe_ratio,
    simple_returns,
    skewness,
)


def phi(z: float) -> float:
    """The standard normal CDF through erf, independently of statistics.NormalDist."""
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_psr_of_a_normal_sample_matches_the_closed_form() -> None:
    rng = random.Random(20260105)
    returns = [rng.gauss(0.0004, 0.01) for _ in range(5000)]
    n = len(returns)
    mean = sum(returns) / n
    sd = math.sqrt(sum((r - mean) ** 2 for r in returns) / (n - 1))
    sr = mean / sd
    # normal data: skewness ~ 0 and (non-excess) kurtosis ~ 3 ...
    assert abs(skewness(returns)) < 0.1
    assert kurtosis(returns) == pytest.approx(3, abs=0.15)
    # ... so the denominator reduces to sqrt(1 + SR^2 / 2)
    closed_form = phi(sr * math.sqrt(n - 1) / math.sqrt(1 + sr**2 / 2))
    assert probabilistic_sharpe_ratio(returns) == pytest.approx(closed_form, abs=2e-3)
    # and against a benchmark Sharpe ratio
    closed_bench = phi((sr - 0.05) * math.sqrt(n - 1) / math.sqrt(1 + sr**2 / 2))
    assert probabilistic_sharpe_ratio(returns, 0.05) == pytest.approx(closed_bench, abs=2e-3)


def test_psr_of_a_skewed_fat_tailed_sample_matches_a_hand_computation() -> None:
    # ten returns: one crash (-6%) gives a long left tail
    returns = [0.010, -0.020, 0.015, 0.005, -0.060, 0.020, 0.012, 0.008, 0.030, -0.004]
    n = 10
    # step 1: mean = 0.016 / 10
    mean = 0.0016
    assert sum(returns) / n == pytest.approx(mean, abs=1e-15)
    # step 2: deviations from the mean
    dev = [0.0084, -0.0216, 0.0134, 0.0034, -0.0616, 0.0184, 0.0104, 0.0064, 0.0284, -0.0056]
    # step 3: sums of powers of the deviations (done by hand, to the digits shown)
    s2 = 0.0058484  # 0.00007056 + 0.00046656 + ... + 0.00003136
    s3 = -0.00021043728
    s4 = 1.5433239632e-05
    assert sum(d**2 for d in dev) == pytest.approx(s2, rel=1e-9)
    assert sum(d**3 for d in dev) == pytest.approx(s3, rel=1e-9)
    assert sum(d**4 for d in dev) == pytest.approx(s4, rel=1e-9)
    # step 4: Sharpe ratio = mean / sqrt(s2 / (n - 1))
    sd = math.sqrt(s2 / 9)  # 0.0254916...
    sr = mean / sd  # 0.0627657...
    assert sr == pytest.approx(0.06276574718, rel=1e-9)
    # step 5: skewness m3 / m2^1.5 and kurtosis m4 / m2^2, with m_k = s_k / n
    m2, m3, m4 = s2 / n, s3 / n, s4 / n
    g3 = m3 / m2**1.5  # -1.48788: skewed left
    g4 = m4 / m2**2  # 4.51214: fatter tails than a normal's 3
    assert g3 == pytest.approx(-1.48787716, rel=1e-7)
    assert g4 == pytest.approx(4.51214412, rel=1e-7)
    # step 6: PSR = Phi(SR * sqrt(n - 1) / sqrt(1 - g3 * SR + (g4 - 1) / 4 * SR^2))
    denominator = 1 - g3 * sr + (g4 - 1) / 4 * sr**2  # 1.0968468
    z = sr * math.sqrt(9) / math.sqrt(denominator)  # 0.1797923
    expected = phi(z)  # 0.5713422
    assert expected == pytest.approx(0.5713421673, rel=1e-8)

    assert skewness(returns) == pytest.approx(g3, rel=1e-9)
    assert kurtosis(returns) == pytest.approx(g4, rel=1e-9)
    assert sharpe_ratio(returns) == pytest.approx(sr, rel=1e-9)
    assert probabilistic_sharpe_ratio(returns) == pytest.approx(expected, rel=1e-9)
    # the fat left tail makes this lower than the normal closed form would say
    assert probabilistic_sharpe_ratio(returns) < phi(sr * 3 / math.sqrt(1 + sr**2 / 2))


def test_psr_refuses_samples_it_cannot_judge() -> None:
    with pytest.raises(ValueError, match="at least 3 returns"):
        probabilistic_sharpe_ratio([0.01, 0.02])
    with pytest.raises(ValueError, match="zero variance"):
        probabilistic_sharpe_ratio([0.01, 0.01, 0.01, 0.01])


def test_losing_returns_give_a_low_psr() -> None:
    rng = random.Random(7)
    losing = [rng.gauss(-0.002, 0.01) for _ in range(400)]
    assert probabilistic_sharpe_ratio(losing) < 0.2


def test_pnl_on_a_scripted_nav_path() -> None:
    path = [200_000, 199_000, 197_000, 195_500, 194_000, 189_000]
    assert pnl_fraction(path) == pytest.approx(-0.055)
    assert pnl_fraction(path[:3]) == pytest.approx(-0.015)
    assert pnl_fraction([100, 103], start=50) == pytest.approx(1.06)
    with pytest.raises(ValueError, match="no NAV"):
        pnl_fraction([])
    with pytest.raises(ValueError, match="positive"):
        pnl_fraction([0, 10])


def test_drawdown_is_measured_from_the_running_peak() -> None:
    # up to 120, down to 96 (-20% from 120), new peak 130, down to 117 (-10%)
    path = [100, 110, 120, 108, 96, 115, 130, 117]
    assert max_drawdown(path) == pytest.approx(0.20)
    # a fall below the start that is smaller than the fall from a later peak
    assert max_drawdown([100, 90, 150, 120]) == pytest.approx(0.20)
    assert max_drawdown([100, 101, 102]) == 0.0
    assert max_drawdown([]) == 0.0


def test_returns_percentiles_and_rates() -> None:
    assert simple_returns([100, 110, 99]) == pytest.approx([0.10, -0.10])
    values = list(range(1, 101))  # 1..100
    assert p95(values) == pytest.approx(95.05)  # numpy.percentile(1..100, 95)
    assert median([5, 1, 3]) == 3
    assert median([1, 2, 3, 4]) == 2.5
    clock = ManualClock()
    now = clock.now()
    times = [now - timedelta(minutes=m) for m in (0, 10, 59, 61, 120)]
    assert per_hour(times, now) == 3  # 61 and 120 minutes ago fall outside the hour
    assert per_hour(times, now, timedelta(minutes=30)) == 4  # 2 in half an hour = 4/h
