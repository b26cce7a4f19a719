"""Measured latency: original and tailored networks timed side by side, interleaved."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


@torch.no_grad()
def interleaved_latency(models: dict[str, Callable[[torch.Tensor], object]], input_shape: tuple[int, ...],
                        batch: int, repeats: int = 15, warmup: int = 3, device: str = "cpu",
                        memory_format: torch.memory_format = torch.contiguous_format) -> dict[str, float]:
    """Median seconds per forward pass of each model; runs alternate so machine noise hits all alike."""
    x = torch.randn((batch, *input_shape), device=device).contiguous(memory_format=memory_format)
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(warmup + repeats):
        for name, fn in models.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def latency_setting(device: str | torch.device) -> str:
    """Where latency was measured, in words: the device, and on CPU the thread count, which changes the
    speed-up of a small network against a large one (docs/design-choices.md; earlier tables in git history of docs/results.md, *One thread and two*)."""
    device = str(device)
    return f"{device}, {torch.get_num_threads()} threads" if device == "cpu" else device


def latency_rounds(models: dict[str, Callable[[torch.Tensor], object]], input_shape: tuple[int, ...], batch: int,
                   rounds: int, repeats: int = 10, device: str = "cpu",
                   memory_format: torch.memory_format = torch.contiguous_format) -> dict[str, list[float]]:
    """Per model, the median of each of ``rounds`` independent interleaved measurements: on a shared
    machine a single measurement can land in a slow moment that hits a small network hardest."""
    per_round = [interleaved_latency(models, input_shape, batch, repeats=repeats, device=device,
                                     memory_format=memory_format) for _ in range(rounds)]
    return {name: [r[name] for r in per_round] for name in models}


def median_latency(models: dict[str, Callable[[torch.Tensor], object]], input_shape: tuple[int, ...], batch: int,
                   rounds: int = 3, repeats: int = 5, device: str = "cpu",
                   memory_format: torch.memory_format = torch.contiguous_format) -> dict[str, float]:
    """Median over ``rounds`` interleaved measurements of each model's seconds per pass: one figure per
    model that a slow moment of a shared machine moves less than a single measurement."""
    per_round = latency_rounds(models, input_shape, batch, rounds, repeats, device, memory_format)
    return {name: statistics.median(times) for name, times in per_round.items()}
