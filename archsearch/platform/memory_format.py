"""Memory layout of feature maps on each device: one rule for training, one for running a network.

Training runs channels-last on a GPU, where cuDNN's convolutions prefer it, and NCHW on the CPU,
where the student's narrow products and batch-norms run fastest that way. A finished network runs
channels-last everywhere: on this project's CPU, with its proxy products emitted as (pixels x
channels) matrix products, every tailored network measured ran faster channels-last than NCHW at
batch 64, and every original too (docs/design-choices.md; earlier tables in git history of docs/results.md, *Channels-last, emitted*). A run saves its
networks on the CPU with channels-last weights, so that ``torch.load(...)(images)`` runs that way
even on NCHW images: a convolution with channels-last weights (and more than one input channel)
returns channels-last maps.
"""
from __future__ import annotations

import contextlib
import io

import torch
import torch.nn as nn


def training_layout(device: str | torch.device) -> torch.memory_format:
    """The memory format feature maps and weights take while archsearch trains on ``device``."""
    return torch.channels_last if torch.device(device).type == "cuda" else torch.contiguous_format


_NAMES = {torch.channels_last: "channels_last", torch.contiguous_format: "nchw"}


# The memory format a finished network is emitted for, timed in and best run in, on every device: on
# this CPU every tailored network and original measured ran faster in it (docs/design-choices.md; earlier tables in git history of docs/results.md); on CUDA it
# is what cuDNN's convolutions prefer (not measured here: no GPU was lent).
DEPLOYMENT_LAYOUT = torch.channels_last


def layout_name(layout: torch.memory_format) -> str:
    """``layout`` as a run's report names it."""
    return _NAMES[layout]


def layout_named(name: str | None, device: str | torch.device) -> torch.memory_format:
    """The layout a run's report names; for runs made before reports named one, the layout runs
    were then timed in on ``device`` (the training layout)."""
    return {v: k for k, v in _NAMES.items()}.get(name, training_layout(device))


def refused_layout(modules: list[nn.Module], probe: torch.Tensor, layout: torch.memory_format,
                   training: torch.memory_format) -> str | None:
    """Why ``modules`` cannot run in ``layout`` (the error's first line), or None when they can, on
    maps in it and on maps in the training layout (how accuracy is measured): a user's model may
    ``.view`` a map that only NCHW keeps contiguous. The modules are left in the training layout."""
    try:
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):  # fx prints the failing line there
            for module in modules:
                module.to(memory_format=layout)(probe.contiguous(memory_format=layout))
                module(probe.contiguous(memory_format=training))
    except RuntimeError as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    finally:
        for module in modules:
            module.to(memory_format=training)
    return None


def deployable_layout(modules: list[nn.Module], probe: torch.Tensor,
                      device: str | torch.device) -> tuple[torch.memory_format, str | None]:
    """The layout ``modules`` will run in on ``device``: the deployment layout, or NCHW with the reason
    when they refuse it (see :func:`refused_layout`)."""
    reason = refused_layout(modules, probe, DEPLOYMENT_LAYOUT, training_layout(device))
    return (torch.contiguous_format, reason) if reason else (DEPLOYMENT_LAYOUT, None)
