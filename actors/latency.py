"""Reading the shards' ingest->credit latency histogram (the `latency` hash of actors.keys)."""

from __future__ import annotations

PERCENTILES = (50, 90, 99)


def histogram_percentiles(
    hist: dict[str, float], max_ms: float | None = None
) -> dict[str, float] | None:
    """Percentiles from a latency histogram {upper bound ms | "inf": count}.

    A percentile is interpolated linearly inside its bucket; the "inf" bucket answers with
    `max_ms` (or the largest finite bound).
    """
    buckets = sorted((float(k), c) for k, c in hist.items() if _is_bound(k) and c > 0)
    inf = hist.get("inf", 0.0)
    total = sum(c for _, c in buckets) + inf
    if total <= 0:
        return None
    top = buckets[-1][0] if buckets else 0.0
    out: dict[str, float] = {}
    for p in PERCENTILES:
        rank = p / 100 * total
        seen, lower, value = 0.0, 0.0, max_ms if max_ms is not None else top
        for bound, count in buckets:
            if seen + count >= rank:
                value = lower + (bound - lower) * (rank - seen) / count
                break
            seen += count
            lower = bound
        out[f"p{p}"] = round(min(value, max_ms) if max_ms is not None else value, 2)
    out["max"] = round(max_ms if max_ms is not None else top, 2)
    out["n"] = int(total)
    if "sum_ms" in hist:
        out["mean"] = round(hist["sum_ms"] / total, 2)
    return out


def _is_bound(field: str) -> bool:
    """A finite bucket bound (other fields: "inf", "sum_ms", "max_ms", "count")."""
    return field.replace(".", "", 1).isdigit()
