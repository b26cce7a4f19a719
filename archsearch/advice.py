"""Warnings and hints a run's report carries: what the numbers alone would not tell a user."""
from __future__ import annotations


def undertrained_teacher(feature_accuracy: float, teacher_accuracy: float, epochs: int | None) -> str | None:
    """A warning when fine-tuning ends below feature extraction: the teacher is the yardstick of the
    selection, and against an undertrained one every network looks within tolerance."""
    if teacher_accuracy >= feature_accuracy:
        return None
    return (f"the fine-tuned teacher ({teacher_accuracy:.2f} %) is worse than feature extraction "
            f"({feature_accuracy:.2f} %) after {epochs} epochs: it is undertrained, so networks judged against it "
            "look better than they are; rerun with more --teacher-epochs (small datasets with many classes need tens)")


# Optimizer steps of one retraining under the full defaults on the data they were sized on
# (12 epochs of 8,000 images at batch 64; docs/design-choices.md, *Stage lengths*).
REFERENCE_RETRAIN_STEPS = 12 * 125


def short_retraining(within: bool, steps: int, epochs: int) -> str | None:
    """A hint when no network reached the tolerance and each retraining ran far fewer steps than the
    defaults were sized on: epochs are per pass over the data, so a small dataset gets few steps, and
    on ResNet-56 → notMNIST (2,000 images) 24 epochs instead of 12 gained 1.3–1.7 points (docs/results.md)."""
    if within or steps * 2 > REFERENCE_RETRAIN_STEPS:
        return None
    more = max(epochs + 1, -(-REFERENCE_RETRAIN_STEPS * epochs // max(steps, 1)))
    return (f"no network reached the tolerance, and each retraining ran only {steps} optimizer steps "
            f"({epochs} epochs of this dataset; the defaults were sized on about {REFERENCE_RETRAIN_STEPS}): "
            f"longer retraining may close the gap (--retrain-epochs {more})")


def not_faster(latency: dict[str, dict[str, float]], batch: str = "batch32") -> str | None:
    """A warning when the tailored network measured no faster than the original: fewer MACs, but the
    proxies it keeps cost more time than the blocks it removed (docs/results.md, Fashion-MNIST)."""
    t = latency[batch]
    if t["tailored"] < t["original"]:
        return None
    return (f"the tailored network is not faster than the original at {batch.replace('batch', 'batch ')} "
            f"({t['original'] * 1e3:.1f} → {t['tailored'] * 1e3:.1f} ms): the proxies it keeps cost more time "
            "than the blocks it removes; a larger --theta keeps fewer proxies")
