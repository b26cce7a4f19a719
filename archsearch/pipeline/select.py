"""Choosing how many universal blocks to remove: the sweep over k and the final pick.

Accuracy after retraining falls, roughly monotonically, as more blocks are removed, so the sweep is
a bisection for the largest k within tolerance, started at the number of blocks the student
already switched off (alpha_l^l < 0.5), kept between 1 and half the blocks (``first_k``). It tries
at most ``max_tries`` values of k.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class Trial:
    """One pruned-and-retrained network of the sweep (k = -1 stands for the unpruned student).

    ``accuracy`` is on the validation split: every choice reads it. ``test_accuracy`` only reports."""

    k: int
    accuracy: float
    macs: int
    params: int
    blocks_kept: int
    theta: float | None = None  # the proxy threshold it was pruned with (None: the unpruned student)
    cost: float | None = None  # measured cost share (``--cost latency``); None: the choice counts MACs
    test_accuracy: float | None = None

    @property
    def size(self) -> float:
        """What "leanest" minimises: the measured cost where there is one, else MACs."""
        return self.macs if self.cost is None else self.cost

    @property
    def label(self) -> str:
        """How logs and tables name this network: its k, and its theta where swept."""
        return f"k={self.k}" + (f", theta {self.theta:g}" if self.theta is not None else "")

    def as_dict(self) -> dict:
        """This trial as the report's ``trials`` list holds it (JSON-ready)."""
        out = dict(k=self.k, theta=self.theta, val_accuracy=self.accuracy, test_accuracy=self.test_accuracy,
                   macs=self.macs, params=self.params, blocks_kept=self.blocks_kept)
        if self.cost is not None:
            out["cost_share"] = self.cost
        return out


def first_k(gates_off: int, num_blocks: int) -> int:
    """The sweep's first k: the student's own verdict (its gates under 0.5), at least 1 and at most
    half the blocks. A strong complexity weight closes most gates while still ranking the blocks;
    then the count says little, and starting at all of them would spend a retraining on a network
    with no universal block left (the bisection still climbs past half when that passes)."""
    return min(max(gates_off, 1), (num_blocks + 1) // 2)


def bisect_k(first_guess: int, num_blocks: int, is_ok: Callable[[int], bool], max_tries: int) -> None:
    """Call ``is_ok(k)`` for the ks a bisection for the largest acceptable k needs."""
    best_ok, first_bad = -1, num_blocks + 1
    k = min(max(first_guess, 0), num_blocks)
    for _ in range(max_tries):
        if is_ok(k):
            best_ok = k
        else:
            first_bad = k
        if first_bad - best_ok <= 1:
            return
        k = (best_ok + first_bad) // 2 if best_ok >= 0 else first_bad // 2


def accuracy_floor(trials: list[Trial], student: Trial, teacher_accuracy: float,
                   tolerance: float) -> tuple[float, bool]:
    """The accuracy a network must reach to be chosen, and whether that is the teacher's tolerance.

    The goal is the teacher's accuracy less the tolerance. When no network tried reaches it, the
    floor becomes the most accurate network's accuracy less the tolerance: networks a tolerance
    apart are alike for the choice (on 2,000 test images one point is about 1.5 standard errors),
    so among those closest to the teacher the leanest is kept, not whichever scored 0.1 more.
    """
    goal = teacher_accuracy - tolerance
    top = max(t.accuracy for t in [*trials, student])
    return (goal, True) if top >= goal else (top - tolerance, False)


def choose(trials: list[Trial], student: Trial, teacher_accuracy: float, tolerance: float) -> tuple[Trial, str, bool]:
    """The leanest pruned network that reaches ``accuracy_floor``, else the unpruned student.
    Returns (trial, which case happened, within tolerance of the teacher)."""
    floor, within = accuracy_floor(trials, student, teacher_accuracy, tolerance)
    ok = [t for t in trials if t.accuracy >= floor]
    best = min(ok, key=lambda t: (t.size, -t.accuracy)) if ok else student
    if within:
        if ok:
            return best, f"leanest pruned network within {tolerance} points of the teacher ({best.label})", True
        return student, "no pruned network was within tolerance; kept the unpruned student, which is within it", True
    top = max([*trials, student], key=lambda t: t.accuracy)
    return best, (f"no network reached {teacher_accuracy - tolerance:.2f} % (teacher {teacher_accuracy:.2f} % − "
                  f"{tolerance}); kept the leanest within {tolerance} points of the most accurate one tried "
                  f"({top.label}, {top.accuracy:.2f} %): {best.label}"), False
