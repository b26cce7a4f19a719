"""Seeded, stratified choice of indices: train/test splits and training-set caps.

Each class gives its share (largest-remainder rounding, so the total is exactly the requested
count), drawn by a numpy generator seeded from ``seed``: the same seed gives the same split on any
machine, and a small cap still sees every class.
"""
from __future__ import annotations

import numpy as np


def _stratified_pick(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Positions (into ``labels``) of ``count`` items, each class represented in proportion."""
    classes, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    quota = sizes * (count / len(labels))
    take = np.floor(quota).astype(np.int64)
    short = count - int(take.sum())
    if short > 0:  # largest remainders first; ties go to the lower class number
        order = np.lexsort((np.arange(len(classes)), -(quota - take)))
        take[order[:short]] += 1
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
