"""A served run's latency and throughput, from the requests it sent this run (cache hits are not measured).

- ``latency_p50_s`` and ``latency_p95_s``: percentiles of the per-request seconds (a classify row's
  request is its choices' calls together), with percentile-bootstrap intervals over the requests.
- ``requests_per_s``: requests answered per second of wall time, from the first request sent to the last
  answer, at the backend's ``concurrency``. Its interval rescales the wall time by the resampled mean
  latency (the throughput a server of the resampled speed would give at the same concurrency).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evalkit.record import Latency

if TYPE_CHECKING:
    from evalkit.cache import CacheStats

RESAMPLES = 1000
SEED = 0


def measured(
    stats: CacheStats, concurrency: int | None
) -> tuple[Latency, dict[str, float], dict[str, tuple[float, float]]]:
    """The run record's latency entry, and the metrics with their 95% intervals (none when no request was
    sent: every answer came from the result cache)."""
    import numpy as np

    seconds = np.asarray(stats.latencies, dtype=float)
    n = len(seconds)
    record = Latency(requests=n, cache_hits=stats.hits, concurrency=concurrency, cold=bool(stats.cold))
    if n == 0:
        return record, {}, {}
    wall = stats.sent_s if stats.sent_s > 0 else float(seconds.sum())
    p50, p95 = (float(np.percentile(seconds, q)) for q in (50, 95))
    rate = n / wall
    record = record.model_copy(
        update={
            "p50_s": round(p50, 4),
            "p95_s": round(p95, 4),
            "requests_per_s": round(rate, 3),
            "output_tokens_per_s": round(stats.output_tokens / wall, 2) if stats.output_tokens else None,
            "wall_s": round(wall, 3),
        }
    )
    rng = np.random.default_rng(SEED)
    samples = seconds[rng.integers(0, n, size=(RESAMPLES, n))]
    mean = float(seconds.mean())

    def interval(values) -> tuple[float, float]:
        low, high = np.percentile(values, [2.5, 97.5])
        return float(low), float(high)

    metrics = {"latency_p50_s": p50, "latency_p95_s": p95, "requests_per_s": rate}
    ci = {
        "latency_p50_s": interval(np.percentile(samples, 50, axis=1)),
        "latency_p95_s": interval(np.percentile(samples, 95, axis=1)),
        "requests_per_s": interval(rate * mean / samples.mean(axis=1)) if mean > 0 else (rate, rate),
    }
    return record, metrics, ci


def latency_line(candidate: str, latency: Latency) -> str:
    """A served run's latency in words (what -v prints)."""
    if latency.requests == 0:
        return (
            f"{candidate}: latency not measured, every answer ({latency.cache_hits}) came from the result cache "
            "(--evalkit-no-cache measures it)"
        )
    state = "cold: the first requests this session sent to it" if latency.cold else "warm"
    tokens = f", {latency.output_tokens_per_s:.1f} output tokens/s" if latency.output_tokens_per_s else ""
    return (
        f"{candidate}: {latency.requests} requests at concurrency {latency.concurrency} ({state}): "
        f"latency p50 {latency.p50_s:.3f}s, p95 {latency.p95_s:.3f}s, {latency.requests_per_s:.2f} requests/s{tokens}"
        + (f"; {latency.cache_hits} cache hits not measured" if latency.cache_hits else "")
    )
