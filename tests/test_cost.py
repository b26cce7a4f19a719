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
    return {n.name: node_macs(n) for n in gm.graph.nodes}


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


class ConvUnit(nn.Module):
    """A user's module that fx keeps whole when named a leaf; it takes a second, non-tensor argument."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))) * scale


class LeafNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), ConvUnit(8), ConvUnit(8)
        self.mid, self.c = ConvUnit(8), ConvUnit(8)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.b(self.a(x), 0.5)
        x = self.mid(x)
        x = x + self.c(x)
        return self.fc(x.mean((2, 3)))


def test_a_leaf_module_costs_what_its_layers_cost():
    inlined, leaf = trace(LeafNet(), (3, 8, 8)), trace(LeafNet(), (3, 8, 8), [ConvUnit])
    assert leaf.total_macs == inlined.total_macs == 8 * 8 * 8 * 27 + 4 * 8 * 8 * 8 * 72 + 16
    # the straight leaf between the two residual blocks does real work, so it is a block of its own
    for bg in (leaf, inlined):
        assert [(bg.edge(e)["name"], bg.edge(e)["macs"]) for e in bg.universal()] == [
            ("block1", 2 * 8 * 8 * 8 * 72), ("mid", 8 * 8 * 8 * 72), ("c", 8 * 8 * 8 * 72)]


def test_a_matrix_product_is_counted():
    class Attend(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x @ x.transpose(1, 2)) + x.matmul(x.transpose(1, 2)) + torch.einsum("bij,bkj->bik", x, x)

    macs = _macs_by_node(Attend(), (5, 7))
    assert [macs[n] for n in ("matmul", "matmul_1", "einsum")] == [5 * 5 * 7] * 3


class SplitBlock(nn.Module):
    """ShuffleNet-style: half the channels pass, half go through a conv; the halves meet in a concat."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c // 2, c // 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, 1)
        return torch.cat([a, torch.relu(self.conv(b))], 1)


class SplitNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(SplitBlock(8), SplitBlock(8), SplitBlock(8))
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def test_a_node_yielding_several_tensors_is_not_a_block_boundary():
    from archsearch.passes.codegen import build_student

    net = SplitNet().eval()
    bg = trace(net, (3, 8, 8))
    assert len(bg.universal()) == 3
    assert all(bg.node(n)["shape"] == (8, 8, 8) for n in bg.block_nodes())
    student = build_student(insert_proxies(bg, 1)).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert student(x)[0].shape == net(x).shape


def test_a_new_convolutional_classifier_keeps_the_old_ones_settings():
    from archsearch.graph.classifier import replace_classifier

    class ConvHead(SplitNet):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Conv2d(8, 2, 3, padding=2, dilation=2, padding_mode="reflect")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.blocks(self.stem(x))).mean((2, 3))

    bg = replace_classifier(trace(ConvHead(), (3, 8, 8)), 5)
    new = bg.gm.get_submodule("fc")
    assert (new.out_channels, new.dilation, new.padding_mode) == (5, (2, 2), "reflect")


def test_task_parameters_are_the_classifiers_proxies_and_gates():
    from archsearch.graph.classifier import replace_classifier

    class FrozenHead(SplitNet):
        def __init__(self) -> None:
            super().__init__()
            self.head_bn = nn.BatchNorm2d(8)  # pre-trained, frozen: shared, not the task's

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.head_bn(self.blocks(self.stem(x))).mean((2, 3)))

    bg = insert_proxies(replace_classifier(trace(FrozenHead(), (3, 8, 8)), 5), 1)
    proxies = sum(p.numel() for e in bg.proxies() for p in bg.edge(e)["module"].parameters())
    assert len(bg.proxies()) == 3  # one beside each of the three blocks: two gates at each of x1..x3
    assert bg.task_params() == 8 * 5 + 5 + proxies + 3 * 2


class Excite(nn.Module):
    """Squeeze-excitation with no skip: a map scaled by weights computed from itself."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(c, c, 3, padding=1), nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x * torch.sigmoid(self.fc(x.mean((2, 3))))[:, :, None, None]


class SharedRelu(nn.Module):
    """Residual blocks that all call one ReLU module, with a squeeze-excitation stage without a skip."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(3))
        self.excite = Excite(8)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.stem(x))
        for i, conv in enumerate(self.blocks):
            x = self.relu(x + conv(self.relu(x)))
            if i == 1:
                x = self.excite(x)
        return self.fc(x.mean((2, 3)))


def test_a_scaling_is_no_residual_join_and_a_shared_relu_names_no_block():
    bg = trace(SharedRelu(), (3, 8, 8))
    names = [bg.edge(e)["name"] for e in bg.universal()]
    assert names == ["blocks.0", "blocks.1", "excite", "blocks.2"]  # the excitation is one straight block
