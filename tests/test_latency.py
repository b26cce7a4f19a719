"""Latency measurement: models alternate pass by pass, warm-up is not timed, rounds reduce to their median."""
import time

import torch

import archsearch.platform.latency as latency


def test_models_alternate_pass_by_pass_and_warm_up_is_not_timed():
    calls = []

    def model(name):
        def run(x):
            calls.append((name, x.shape))
            if len(calls) <= 4:  # the two warm-up passes of each model are slow
                time.sleep(0.05)
        return run

    out = latency.interleaved_latency({n: model(n) for n in ("original", "tailored")}, (3, 4, 4), batch=2,
                                      repeats=3, warmup=2)
    assert [name for name, _ in calls] == ["original", "tailored"] * 5
    assert all(shape == torch.Size([2, 3, 4, 4]) for _, shape in calls)
    assert set(out) == {"original", "tailored"} and all(0 <= t < 0.04 for t in out.values())


def test_median_latency_is_the_median_of_independent_rounds(monkeypatch):
    rounds = iter([{"original": 0.20, "tailored": 0.90}, {"original": 0.30, "tailored": 0.05},
                   {"original": 0.10, "tailored": 0.07}])
    seen = []

    def one_round(models, input_shape, batch, repeats, device, memory_format):
        seen.append((batch, repeats, device))
        return next(rounds)

    monkeypatch.setattr(latency, "interleaved_latency", one_round)
    got = latency.median_latency({"original": None, "tailored": None}, (3,), 32)
    assert got == {"original": 0.20, "tailored": 0.07}  # each model's median comes from a different round
    assert seen == [(32, 5, "cpu")] * 3
