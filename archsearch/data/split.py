"""Seeded, stratified choice of indices: train/test splits, training-set caps, validation sets.

Each class gives its share (largest-remainder rounding, so the total is exactly the requested
count), drawn by a numpy generator seeded from ``seed``: the same seed gives the same split on any
machine, and a small cap still sees every class.
"""
from __future__ import annotations

import numpy as np


def _stratified_pick(labels: np.ndarray, count: int, rng: np.random.Generator,
                     low: np.ndarray | None = None, high: np.ndarray | None = None) -> np.ndarray:
    """Positions (into ``labels``) of ``count`` items, each class represented in proportion
    (largest remainders; ties to the lower class number), class c giving between ``low[c]`` and
    ``high[c]`` items (default: 0 and all of them)."""
    classes, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    take = _bounded_take(sizes, count, np.zeros_like(sizes) if low is None else low,
                         sizes if high is None else high)
    picked = []
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        picked.append(rng.permutation(members)[:take[c]])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def split_indices(labels: np.ndarray, test_fraction: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Split positions 0..N-1 into (train, test) with ``round(N * test_fraction)`` test items."""
    n = len(labels)
    n_test = min(max(int(round(n * test_fraction)), 1), n - 1)
    test = _stratified_pick(labels, n_test, np.random.default_rng([seed, 0]))
    keep = np.ones(n, dtype=bool)
    keep[test] = False
    return np.flatnonzero(keep), test


def limit_indices(idx: np.ndarray, labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """A seeded, class-balanced subset of ``limit`` of the positions ``idx`` (all if fewer)."""
    if limit >= len(idx):
        return idx
    chosen = _stratified_pick(labels[idx], limit, np.random.default_rng([seed, 1]))
    return idx[chosen]


def _bounded_take(sizes: np.ndarray, count: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Per class counts summing to ``count``, in proportion to ``sizes``, within [low, high].

    Proportional floors first (clipped to the bounds), then one at a time: the class furthest under
    its quota gains, or the one furthest over it gives back (ties to the lower class number).
    ``sum(low) <= count <= sum(high)`` must hold.
    """
    quota = sizes * (count / max(int(sizes.sum()), 1))
    take = np.clip(np.floor(quota).astype(np.int64), low, high)
    order_key = np.arange(len(sizes))
    while int(take.sum()) < count:
        room = np.flatnonzero(take < high)
        gap = (quota - take)[room]
        take[room[np.lexsort((order_key[room], -gap))[0]]] += 1
    while int(take.sum()) > count:
        room = np.flatnonzero(take > low)
        gap = (quota - take)[room]
        take[room[np.lexsort((order_key[room], gap))[0]]] -= 1
    return take


def val_indices(idx: np.ndarray, labels: np.ndarray, fraction: float, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Split the training positions ``idx`` into (train, validation), stratified and seeded.

    The validation set takes ``max(round(N * fraction), 2 * K3, 1)`` images, K3 being the number of
    classes with at least 3 training images: every such class gives at least 2, every class gives
    in proportion to its size, and no class gives its last image (so the count shrinks where the
    classes are that small; a training set of one image per class keeps them all and gets an empty
    validation set). Both parts keep the order of ``idx``.
    """
    if len(idx) == 0:
        return idx, idx[:0]
    _, sizes = np.unique(labels[idx], return_counts=True)
    low = np.where(sizes >= 3, 2, 0)
    high = sizes - 1
    count = min(max(int(round(len(idx) * fraction)), int(low.sum()), 1), int(high.sum()))
    val = _stratified_pick(labels[idx], count, np.random.default_rng([seed, 2]), low, high)
    keep = np.ones(len(idx), dtype=bool)
    keep[val] = False
    return idx[keep], idx[val]
