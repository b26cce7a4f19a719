"""Warnings and hints a run's report carries: what the numbers alone would not tell a user."""
from __future__ import annotations


def not_faster(latency: dict[str, dict[str, float]], batch: str = "batch32") -> str | None:
    """A warning when the tailored network measured no faster than the original: fewer MACs, but the
    proxies it keeps cost more time than the blocks it removed (docs/design-choices.md; earlier tables in git history of docs/results.md, Fashion-MNIST)."""
    t = latency[batch]
    if t["tailored"] < t["original"]:
        return None
    return (f"the tailored network is not faster than the original at {batch.replace('batch', 'batch ')} "
            f"({t['original'] * 1e3:.1f} → {t['tailored'] * 1e3:.1f} ms): the proxies it keeps cost more time "
            "than the blocks it removes; a larger --theta keeps fewer proxies")
