"""Memory layout of feature maps on each device: one rule for training, timing and saving.

Channels-last on a GPU, where cuDNN's convolutions prefer it; NCHW on the CPU, where the networks
archsearch emits run fastest as they are (docs/results.md, *Channels-last*). What a run saves is
NCHW, so it loads and runs alike on any machine.
"""
from __future__ import annotations

import torch


def layout_for(device: str | torch.device) -> torch.memory_format:
    """The memory format feature maps and weights take on ``device``."""
    return torch.channels_last if torch.device(device).type == "cuda" else torch.contiguous_format
