"""Classifier heads as users write them: replaced for the task, emitted as student and slim network,
refused in one line where archsearch cannot map them; and the linear probe on every head form."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from archsearch.errors import UserError
from archsearch.graph.classifier import replace_classifier
from archsearch.graph.trace import trace
from archsearch.passes.codegen import build_slim, build_student, read_gates
from archsearch.passes.insert_proxies import insert_proxies
from archsearch.passes.prune import prune
from archsearch.train.linear_probe import linear_probe

SHAPE = (3, 16, 16)
PROBE_SHAPE = (3, 8, 8)  # the probe's tests train: smaller images keep them fast


class Block(nn.Module):
    def __init__(self, c: int, bn: bool = True) -> None:
        super().__init__()
        norm = (lambda: nn.BatchNorm2d(c)) if bn else nn.Identity
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), norm()
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class Net(nn.Module):
    """A stem, two residual blocks of 16 channels, and the head under test."""

    def __init__(self, head: nn.Module, bn: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(16) if bn else nn.Identity(), nn.ReLU())
        self.blocks = nn.Sequential(Block(16, bn), Block(16, bn))
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class MeanNet(Net):
    """Form 3 with a functional mean over H, W instead of a pooling module."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.head(self.blocks(self.stem(x))).mean((2, 3)), 1)


def _pool_flatten(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), *layers)


HEADS = {  # name -> (factory of the model given batch-norm on/off, classifier path, classifier type)
    # 1. a final Linear: torchvision ResNet, and MobileNetV2's Sequential(Dropout, Linear)
    "pool-flatten-linear": (lambda bn=True: Net(_pool_flatten(nn.Linear(16, 10)), bn), "head.2", nn.Linear),
    "pool-flatten-dropout-linear": (lambda bn=True: Net(_pool_flatten(nn.Sequential(nn.Dropout(0.2), nn.Linear(16, 10))),
                                                        bn), "head.2.1", nn.Linear),
    # 2. a 1x1 convolution on a pooled map, then flatten; and SqueezeNet's conv, ReLU, pool, flatten
    "pool-conv1x1-flatten": (lambda bn=True: Net(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 10, 1),
                                                               nn.Flatten()), bn), "head.1", nn.Conv2d),
    "squeezenet": (lambda bn=True: Net(nn.Sequential(nn.Dropout(0.5), nn.Conv2d(16, 10, 1), nn.ReLU(),
                                                     nn.AdaptiveAvgPool2d(1), nn.Flatten()), bn), "head.1", nn.Conv2d),
    # 3. a convolution, then global pooling (a module, or a mean over H, W)
    "conv3x3-pool-flatten": (lambda bn=True: Net(nn.Sequential(nn.Conv2d(16, 10, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                                                               nn.Flatten()), bn), "head.0", nn.Conv2d),
    "conv1x1-mean": (lambda bn=True: MeanNet(nn.Conv2d(16, 10, 1), bn), "head", nn.Conv2d),
}


@pytest.mark.parametrize("form", list(HEADS))
def test_every_head_form_is_replaced_trained_pruned_and_emitted_slim(form: str) -> None:
    make, path, kind = HEADS[form]
    torch.manual_seed(0)
    model = make()
    old = model.get_submodule(path)
    bg = replace_classifier(trace(model, SHAPE), 5)
    assert bg.g.graph["classifier"] == path
    new = bg.gm.get_submodule(path)
    assert type(new) is kind and new is not old
    assert (new.out_features if kind is nn.Linear else new.out_channels) == 5
    assert bg.g.nodes["logits"]["shape"] == (5,)

    student_bg = insert_proxies(bg, "3")
    student = build_student(student_bg)
    student.train()
    x, y = torch.randn(6, *SHAPE), torch.randint(0, 5, (6,))
    logits, feats = student(x)
    assert logits.shape == (6, 5)
    loss = F.cross_entropy(logits, y)
    assert torch.isfinite(loss)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    optimizer.zero_grad()
    loss.backward()
    assert student.get_submodule(path).weight.grad is not None
    optimizer.step()

    pruned = prune(read_gates(student_bg, student.state_dict()), k=1, theta=0.05)
    assert len(pruned.universal()) < 2 and pruned.proxies()  # a block removed, a proxy in its place
    pruned_student = build_student(pruned).eval()
    slim = build_slim(pruned).eval()
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        expected, out = pruned_student(x)[0], slim(x)
    assert out.shape == (4, 5)
    assert torch.allclose(out, expected, atol=1e-4, rtol=0)


def test_a_layer_before_the_classifier_stays_and_the_last_linear_is_replaced() -> None:
    model = Net(_pool_flatten(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10), nn.LogSoftmax(1)))
    hidden = model.head[2]
    bg = replace_classifier(trace(model, SHAPE), 5)
    assert bg.g.graph["classifier"] == "head.4"
    assert bg.gm.get_submodule("head.2") is hidden
    with torch.no_grad():
        assert build_slim(bg).eval()(torch.randn(2, *SHAPE)).shape == (2, 5)


class ViewNet(Net):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x))).view(-1, 10)  # fixes the number of classes


class FunctionalNet(Net):
    def __init__(self) -> None:
        super().__init__(nn.Identity())
        self.weight = nn.Parameter(torch.randn(10, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1), self.weight)


REFUSED = {  # name -> (model, words the message must hold)
    "norm after the classifier": (Net(_pool_flatten(nn.Linear(16, 10), nn.LayerNorm(10))),
                                  ("'head.3' (LayerNorm)", "'head.2' (Linear)", "nn.Linear")),
    "output not (N, K)": (Net(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 10, 1))),
                          ("(N, 10, 1, 1)", "'head.1' (Conv2d)", "(N, classes)")),
    "map flattened unpooled": (Net(nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Conv2d(16, 10, 1), nn.Flatten())),
                               ("40 values", "'head.1' (Conv2d)", "10 outputs")),
    "number of classes fixed after it": (ViewNet(_pool_flatten(nn.Linear(16, 10))),
                                         ("'head.2' (Linear)", "5 outputs", "[-1, 10]")),
    "functional classifier": (FunctionalNet(), ("'linear'", "'weight'", "not a module")),
    "no layer with parameters": (Net(_pool_flatten()), ("no layer with parameters", "nn.Linear")),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_other_heads_are_refused_in_one_line(case: str, capsys: pytest.CaptureFixture) -> None:
    model, words = REFUSED[case]
    bg = trace(model, SHAPE)
    state = {k: v.clone() for k, v in bg.gm.state_dict().items()}
    with pytest.raises(UserError) as info:
        replace_classifier(bg, 5)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert all(w in message for w in words), message
    assert capsys.readouterr().err == ""  # nothing printed beside the one line the CLI shows
    after = bg.gm.state_dict()  # a refused model is left as it was
    assert after.keys() == state.keys() and all(torch.equal(state[k], after[k]) for k in state)


def test_a_reflect_padded_convolutional_classifier_is_emitted_slim() -> None:
    model = Net(nn.Sequential(nn.Conv2d(16, 10, 3, padding=1, padding_mode="reflect"), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten()))
    bg = replace_classifier(trace(model, SHAPE), 5)
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        expected = build_student(bg).eval()(x)[0]
        assert torch.allclose(build_slim(bg).eval()(x), expected, atol=1e-5)


# ---- the linear probe on every head form ----

def _easy_task(n: int, seed: int) -> TensorDataset:
    """Three classes, each brightening one colour channel by half the noise's spread: separable
    after a random ReLU network, given a probe that is not thrown by its features' scale."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, *PROBE_SHAPE, generator=g)
    x[torch.arange(n), y] += 0.5
    return TensorDataset(x, y)


def _loaders() -> tuple[DataLoader, dict[str, DataLoader]]:
    return (DataLoader(_easy_task(240, 0), batch_size=64),
            {"test": DataLoader(_easy_task(120, 1), batch_size=64)})


@pytest.mark.parametrize("form", list(HEADS))
def test_probe_trains_every_head_form_and_its_head_works_in_the_model(form: str) -> None:
    make, path, kind = HEADS[form]
    torch.manual_seed(0)
    bg = replace_classifier(trace(make(bn=False), PROBE_SHAPE), 3)
    model = bg.gm.eval()
    classifier = model.get_submodule(path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train, evals = _loaders()
    result = linear_probe(model, classifier, train, evals, "cpu", epochs=15, batch_size=64,
                          classifier_path=path)
    assert result.accuracy["test"] > 70.0, result.accuracy  # chance is 33 %
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert type(result.head) is kind and result.head.weight.shape == classifier.weight.shape
    # the returned head, put in the classifier's place, gives the model the reported accuracy
    probed = copy.deepcopy(model)
    probed.set_submodule(path, result.head)
    x, y = (torch.cat(t) for t in zip(*evals["test"]))
    with torch.no_grad():
        logits = probed(x)
    assert logits.shape == (len(y), 3)
    assert abs(100.0 * int((logits.argmax(1) == y).sum()) / len(y) - result.accuracy["test"]) < 1e-9


@pytest.mark.parametrize("form", ["pool-flatten-linear", "squeezenet", "conv3x3-pool-flatten"])
def test_probe_is_scale_free(form: str) -> None:
    """Activations 100 times larger (first convolution scaled, no batch-norm): same accuracy at lr 0.05."""
    make, path, _ = HEADS[form]
    torch.manual_seed(0)
    bg = replace_classifier(trace(make(bn=False), PROBE_SHAPE), 3)
    loud = copy.deepcopy(bg.gm)
    with torch.no_grad():
        loud.get_submodule("stem.0").weight.mul_(100.0)
    train, evals = _loaders()
    plain = linear_probe(bg.gm, bg.gm.get_submodule(path), train, evals, "cpu", epochs=15, lr=0.05, batch_size=64)
    scaled = linear_probe(loud, loud.get_submodule(path), train, evals, "cpu", epochs=15, lr=0.05, batch_size=64)
    assert plain.accuracy["test"] > 70.0, plain.accuracy
    assert abs(scaled.accuracy["test"] - plain.accuracy["test"]) <= 3.0, (plain.accuracy, scaled.accuracy)
    assert torch.isfinite(scaled.head.weight).all()


def test_probe_reads_the_logits_of_a_student_that_also_returns_its_block_outputs() -> None:
    make, path, _ = HEADS["pool-conv1x1-flatten"]
    torch.manual_seed(0)
    student = build_student(insert_proxies(replace_classifier(trace(make(bn=False), PROBE_SHAPE), 3), 1)).eval()
    train, evals = _loaders()
    result = linear_probe(student, student.get_submodule(path), train, evals, "cpu", epochs=15, batch_size=64)
    assert result.accuracy["test"] > 70.0, result.accuracy
