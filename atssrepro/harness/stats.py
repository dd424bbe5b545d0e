"""The statistics behind the claims' verdicts: Student's t, the noise of a run, intervals, power.

Pure functions of numbers (AP points), no pandas, no scipy: ``report`` and ``run --dry-run`` import
this module, and the t distribution is all they need of scipy. docs/claims.md states the rule that
``harness/verdicts.py`` builds from these pieces.

- :func:`t_quantile`: Student's t quantile for an integer number of degrees of freedom (the normal
  for ``math.inf``), from the exact finite series of its CDF.
- :func:`pooled_noise`: the run-to-run standard deviation, pooled over rows run with several seeds,
  or the user's assumed level when no row has two.
- :func:`difference`: the difference of two rows' means with its interval.
- :func:`p_exceeds`: the probability that a t statistic clears a quantile when the truth is known,
  the one piece of every power computation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist, fmean
from typing import Any

from atssrepro.errors import UserError

NORMAL = NormalDist()
DEFAULT_SIGMA = 0.2
"""AP points: the run-to-run standard deviation assumed where no row of a claim has two seeds (ASSIGNERS.md §4,
docs/claims.md). Here, not in ``verdicts``, so that the command line shows it without importing pandas."""
LEVEL = 0.95
"""The confidence level of every interval."""


def check_noise(sigma: Any, where: str = "noise") -> float:
    """``sigma`` as a float, or a one-line error naming ``where`` (the option or file key it came from)."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise UserError(
            f"{where} = {sigma!r}: the per-run noise level must be a finite number > 0 in AP points "
            f"(the standard deviation between seeds; default {DEFAULT_SIGMA}, docs/claims.md)"
        )
    return float(sigma)


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom: an integer >= 1, or ``math.inf`` (normal).

    The exact finite series in theta = atan(|t| / sqrt(df)) (Abramowitz & Stegun 26.7.3-4); its
    ``df // 2`` terms are cheap for any number of seeds a reproduction runs.
    """
    if math.isinf(df):
        return NORMAL.cdf(t)
    nu = _integer_df(df)
    theta = math.atan(abs(t) / math.sqrt(nu))
    cos2 = math.cos(theta) ** 2
    if nu % 2:  # (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)), up to cos^(nu-2)
        term = total = math.cos(theta) if nu > 1 else 0.0
        for k in range(1, (nu - 1) // 2):
            term *= cos2 * (2 * k) / (2 * k + 1)
            total += term
        central = 2 / math.pi * (theta + math.sin(theta) * total)
    else:  # sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...), up to cos^(nu-2)
        term = total = 1.0
        for k in range(1, nu // 2):
            term *= cos2 * (2 * k - 1) / (2 * k)
            total += term
        central = math.sin(theta) * total
    upper = 0.5 + central / 2  # P(T <= |t|)
    return upper if t >= 0 else 1 - upper


def t_pdf(t: float, df: float) -> float:
    if math.isinf(df):
        return NORMAL.pdf(t)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t, 0.5 <= p < 1 (an interval's upper factor), df as :func:`t_cdf` takes it.

    df = 1 and 2 have closed forms. Otherwise Newton's method from the normal quantile: t's quantile
    lies above it and the CDF is concave on t >= 0, so every step stays below the root and the
    iteration rises to it monotonically.
    """
    if not 0.5 <= p < 1:
        raise ValueError(f"t_quantile: p = {p} must lie in [0.5, 1)")
    if math.isinf(df):
        return NORMAL.inv_cdf(p)
    nu = _integer_df(df)
    if nu == 1:
        return math.tan(math.pi * (p - 0.5))
    if nu == 2:
        return (2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p)))
    t = NORMAL.inv_cdf(p)
    for _ in range(200):
        step = (p - t_cdf(t, nu)) / t_pdf(t, nu)
        t += step
        if step <= 1e-13 * t:
            return t
    raise ArithmeticError(f"t_quantile({p}, {df}) did not converge")  # pragma: no cover: monotone by concavity


def _integer_df(df: float) -> int:
    if df < 1 or df != int(df):
        raise ValueError(f"degrees of freedom {df} must be an integer >= 1 or inf")
    return int(df)


@dataclass(frozen=True)
class Noise:
    """The standard deviation of one run's value (AP points) and how it is known."""

    sd: float
    df: float
    """Degrees of freedom of ``sd``: sum of (n_r - 1) when pooled; ``math.inf`` when assumed."""
    source: str
    """"pooled" (from the seeds of the rows run several times) or "assumed" (the user's level)."""


def pooled_noise(samples: Sequence[Sequence[float]], assumed: float) -> Noise:
    """The pooled sample standard deviation over the samples of >= 2 values, else ``assumed`` with df = inf.

    s^2 = sum over those rows of (n_r - 1) s_r^2, divided by sum of (n_r - 1): each row deviates
    from its own mean, so the rows' different true values never count as noise.
    """
    several = [values for values in samples if len(values) >= 2]
    df = sum(len(values) - 1 for values in several)
    if df == 0:
        return Noise(assumed, math.inf, "assumed")
    squares = sum((value - fmean(values)) ** 2 for values in several for value in values)
    return Noise(math.sqrt(squares / df), df, "pooled")


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


def difference(a: Sequence[float], b: Sequence[float], noise: Noise, quantile: float) -> Interval:
    """mean(b) - mean(a) +- quantile * noise.sd * sqrt(1/n_a + 1/n_b)."""
    estimate = fmean(b) - fmean(a)
    half = quantile * noise.sd * math.sqrt(1 / len(a) + 1 / len(b))
    return Interval(estimate, estimate - half, estimate + half)


def p_exceeds(noncentrality: float, quantile: float, df: float) -> float:
    """P(T' > quantile) for a noncentral t statistic T' = (estimate + c) / its estimated standard error.

    ``noncentrality`` is the statistic's true value over the true standard error. Exact (the normal)
    when df is inf, i.e. when the noise is assumed, not estimated; otherwise the normal approximation
    of Abramowitz & Stegun 26.7.10 (e.g. a two-sample t test with 10 seeds a side at an effect of one
    standard deviation: 0.562 here, 0.562 exact).
    """
    if math.isinf(df):
        return NORMAL.cdf(noncentrality - quantile)
    shrunk = quantile * (1 - 1 / (4 * df))
    return NORMAL.cdf((noncentrality - shrunk) / math.sqrt(1 + quantile * quantile / (2 * df)))
