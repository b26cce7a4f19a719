"""MAC counting of single layers, and networks archsearch cannot give proxies."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from archsearch.errors import UserError
from archsearch.graph.cost import module_macs, node_macs
from archsearch.graph.trace import propagate_shapes, symbolic_trace
from archsearch.graph.trace import trace
from archsearch.passes.insert_proxies import insert_proxies


def _macs_by_node(model: nn.Module, shape: tuple[int, ...]) -> dict[str, int]:
    gm = symbolic_trace(model, ())
    propagate_shapes(gm, shape)
    return {n.name: node_macs(gm, n) for n in gm.graph.nodes}


def test_transposed_convolution_counts_each_input_value_once_per_kernel():
    up = nn.ConvTranspose2d(8, 4, kernel_size=2, stride=2)
    expected = 8 * 5 * 5 * 4 * 2 * 2  # input values x output channels x kernel taps
    assert _macs_by_node(nn.Sequential(up), (8, 5, 5))["_0"] == expected
    assert module_macs(up, (8, 5, 5)) == expected


def test_convolution_counts_each_output_value_once_per_kernel():
    conv = nn.Conv2d(8, 4, kernel_size=3, stride=2, padding=1, groups=2)
    expected = 4 * 3 * 3 * (8 // 2) * 3 * 3
    assert _macs_by_node(nn.Sequential(conv), (8, 5, 5))["_0"] == expected
    assert module_macs(conv, (8, 5, 5)) == expected


class Residual1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.fc = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.a(x))
        return self.fc(torch.relu(self.b(x) + x))


def test_a_network_without_feature_maps_gets_a_clear_error():
    bg = trace(Residual1d(), (16,))
    with pytest.raises(UserError, match="2-d convolutional networks"):
        insert_proxies(bg, 3)


class SharedBlock(nn.Module):
    """One residual block's convolution called at two depths (weight sharing)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.conv(x) + x)
        x = torch.relu(self.conv(x) + x)
        return self.fc(x.mean((2, 3)))


def test_a_module_read_by_two_blocks_counts_once():
    model = SharedBlock()
    bg = trace(model, (3, 8, 8))
    assert len(bg.universal()) == 2
    assert bg.params() == bg.total_params == sum(p.numel() for p in model.parameters())


def test_a_pre_activation_stays_with_its_block():
    """BN and ReLU at the start of a pre-activation block are that block's, not the previous node's."""
    from randnets import BlockSpec, RandNet

    net = RandNet(4, [BlockSpec(4, 1, False, False, False), BlockSpec(4, 1, True, True, False, preact=True)]).eval()
    bg = trace(net, (3, 8, 8))
    assert bg.node("x1")["post"] == []
    second = bg.edge(("x1", "x2", "universal"))["nodes"]
    assert any("pre" in n for n in second)
