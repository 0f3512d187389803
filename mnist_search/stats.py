"""Replicate statistics: mean, sample std and a 95% t-interval, and a fair comparison.

Standard library only (no scipy): the t quantiles for small samples are tabulated.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

__all__ = ["Summary", "compare", "summarize"]

# two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30; 1.96 beyond
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float | None  # sample std; None for a single run
    ci95: float | None  # half-width of the 95% interval of the mean

    @property
    def low(self) -> float:
        return self.mean - (self.ci95 or 0.0)

    @property
    def high(self) -> float:
        return self.mean + (self.ci95 or 0.0)


def summarize(values: list[float]) -> Summary:
    if not values:
        raise ValueError("no values to summarize")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Summary(1, mean, None, None)
    if not all(math.isfinite(v) for v in values):
        # a replicate that diverged or never ran (confirm counts it as nan): no mean or
        # spread to speak of, where statistics.stdev raises on a nan (Python 3.11)
        return Summary(len(values), math.nan, math.nan, math.nan)
    std = statistics.stdev(values)
    return Summary(len(values), mean, std, t975(len(values) - 1) * std / math.sqrt(len(values)))


def compare(a: Summary, b: Summary) -> str:
    """How strongly a's mean above b's is supported: 'clear', 'within noise' or 'untested'."""
    if a.ci95 is None or b.ci95 is None:
        return "untested"
    # Welch's t statistic against the 95% quantile of the smaller sample's df: conservative.
    se = math.sqrt(a.std ** 2 / a.n + b.std ** 2 / b.n) if a.std and b.std else 0.0
    if se == 0.0:
        return "clear" if a.mean != b.mean else "within noise"
    t = (a.mean - b.mean) / se
    return "clear" if t > t975(min(a.n, b.n) - 1) else "within noise"
