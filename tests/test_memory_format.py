"""Which memory layout a network can run in."""
from __future__ import annotations

import torch
import torch.nn as nn

from archsearch.platform.memory_format import layout_name, layout_named, refused_layout


class _ViewHead(nn.Module):
    """A head that flattens a spatial map with .view, as much older model code does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 5 * 5, 2)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(y.view(y.size(0), -1))


def test_a_view_of_a_spatial_map_refuses_channels_last_and_the_module_keeps_its_layout():
    module = _ViewHead().eval()
    probe = torch.randn(2, 3, 5, 5)
    reason = refused_layout([module], probe, torch.channels_last, torch.contiguous_format)
    assert reason is not None and "view" in reason
    assert module.conv.weight.is_contiguous()  # back in the training layout


def test_a_plain_network_runs_channels_last():
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    assert refused_layout([module], torch.randn(2, 3, 6, 6), torch.channels_last, torch.contiguous_format) is None


def test_layout_names_round_trip_and_old_runs_read_as_their_training_layout():
    for layout in (torch.channels_last, torch.contiguous_format):
        assert layout_named(layout_name(layout), "cpu") == layout
    assert layout_named(None, "cpu") == torch.contiguous_format
