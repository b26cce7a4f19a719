"""The pruning sweep's choice of k: where it starts, that the bisection finds the threshold, and the pick."""
from __future__ import annotations

from hypothesis import given, strategies as st

from archsearch.pipeline.select import Trial, accuracy_floor, bisect_k, choose, first_k


@given(st.integers(0, 60), st.integers(1, 60))
def test_first_k_is_the_gates_verdict_bounded_by_half_the_blocks(off, n):
    off = min(off, n)
    k = first_k(off, n)
    assert 1 <= k <= (n + 1) // 2
    if 1 <= off <= (n + 1) // 2:
        assert k == off


@given(st.integers(1, 40), st.data())
def test_bisection_finds_the_largest_acceptable_k(n, data):
    threshold = data.draw(st.integers(-1, n))  # k <= threshold is within tolerance (-1: none is)
    start = first_k(data.draw(st.integers(0, n)), n)
    tried: list[int] = []

    def is_ok(k: int) -> bool:
        tried.append(k)
        return k <= threshold

    bisect_k(start, n, is_ok, max_tries=2 * n.bit_length() + 2)
    assert tried[0] == start and len(set(tried)) == len(tried)
    if threshold >= 0:
        assert max(k for k in tried if k <= threshold) == threshold
    else:
        assert 0 in tried


def test_choose_prefers_the_leanest_within_tolerance_else_the_leanest_near_the_most_accurate():
    student = Trial(-1, 90.0, 100, 10, 9)
    trials = [Trial(2, 97.0, 80, 8, 7), Trial(4, 96.6, 60, 6, 5), Trial(6, 95.0, 40, 4, 3)]
    best, _, within = choose(trials, student, teacher_accuracy=97.0, tolerance=0.5)
    assert (best.k, within) == (4, True)
    best, reason, within = choose(trials, student, teacher_accuracy=99.0, tolerance=0.5)
    assert (best.k, within) == (4, False)  # 96.6 is within 0.5 of the best tried (97.0) and leaner
    assert "97.00 %" in reason and "k=4" in reason
    best, _, within = choose(trials, student, teacher_accuracy=99.0, tolerance=0.3)
    assert (best.k, within) == (2, False)
    # the unpruned student: chosen when it alone reaches the floor, in either case
    assert choose(trials, Trial(-1, 98.0, 100, 10, 9), teacher_accuracy=99.0, tolerance=0.5)[0].k == -1
    assert choose(trials[1:], Trial(-1, 97.0, 100, 10, 9), teacher_accuracy=97.2, tolerance=0.5)[0].k == -1


def test_choose_minimises_the_measured_cost_where_there_is_one():
    student = Trial(-1, 90.0, 100, 10, 9, cost=1.2)
    few_macs_slow = Trial(4, 97.0, 50, 6, 5, 0.05, cost=0.9)
    more_macs_fast = Trial(2, 97.0, 80, 8, 7, 0.05, cost=0.3)
    assert choose([few_macs_slow, more_macs_fast], student, teacher_accuracy=97.0, tolerance=0.5)[0].k == 2
    by_macs = [Trial(t.k, t.accuracy, t.macs, t.params, t.blocks_kept, t.theta) for t in (few_macs_slow, more_macs_fast)]
    assert choose(by_macs, Trial(-1, 90.0, 100, 10, 9), teacher_accuracy=97.0, tolerance=0.5)[0].k == 4


@given(st.lists(st.tuples(st.integers(0, 20), st.floats(0, 100), st.integers(1, 1000)), min_size=1, max_size=8),
       st.floats(0, 100), st.floats(0, 100), st.floats(0, 5))
def test_choice_reaches_the_floor_and_nothing_leaner_does(raw, student_acc, teacher, tolerance):
    trials = [Trial(k, acc, macs, 0, 0, 0.05) for k, acc, macs in raw]
    student = Trial(-1, student_acc, 2000, 0, 0)
    floor, within = accuracy_floor(trials, student, teacher, tolerance)
    best, _, chosen_within = choose(trials, student, teacher, tolerance)
    assert chosen_within == within == (max(t.accuracy for t in [*trials, student]) >= teacher - tolerance)
    assert best.accuracy >= floor
    assert not any(t.accuracy >= floor and t.macs < best.macs for t in trials)


def test_theta_sweep_values():
    import pytest

    from archsearch.errors import UserError
    from archsearch.pipeline.config import TailorConfig, parse_theta_sweep

    assert parse_theta_sweep("auto", 0.05) == [0.15, 0.25]
    assert parse_theta_sweep("auto", 0.2) == [0.25]          # a larger --theta keeps working with the default
    assert parse_theta_sweep("auto", 0.3) == []
    assert parse_theta_sweep("none", 0.05) == []
    assert parse_theta_sweep("0.1,0.2", 0.05) == [0.1, 0.2]
    TailorConfig(theta=0.2).check()
    for bad in ("0.05", "0.2,0.1", "0.1,0.1", "nan", "inf", "0.5,1", "x", ""):
        with pytest.raises(UserError, match="--theta-sweep"):
            parse_theta_sweep(bad, 0.05)
