"""The feature-extraction baseline: the pre-trained network frozen, only a new classifier trained.

This is what a user gets without NetTailor or fine-tuning, so every report carries it next to the
teacher and the tailored network. The classifier's inputs are computed once (one pass over the
data), then a fresh classifier of the same shape is trained on them, which takes seconds.

The logits are computed exactly as the model computes them after its classifier: the probe cuts the
model's fx graph after the classifier (a flatten for ``pool → Linear`` and ``pool → 1x1 conv →
flatten`` heads, the global pooling for ``conv → pool`` heads) and runs the trained copy through it.

Training is scale-free: the classifier trains on standardised features (each input channel
centred where the classifier's bias can take the mean back, and all divided by one spread, that of
the features as a whole), so a network
whose activations are 100 times larger than usual trains as well at the same learning rate. The
standardisation is then folded into the returned head's weights and bias, exactly (per channel, for
any padding, stride, dilation and groups), so the head works directly on the model's own features.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader


@dataclass
class ProbeResult:
    """What :func:`linear_probe` trained and how well it does."""

    head: nn.Module  # a trained copy of ``classifier`` (same type and shapes), usable in place of it in the model
    accuracy: dict[str, float]  # top-1 percent for every loader in ``evals``


@torch.no_grad()
def classifier_inputs(model: nn.Module, classifier: nn.Module, loader: DataLoader,
                      device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``classifier`` receives when ``model`` (eval mode) runs over ``loader``, with the labels
    (both on the CPU, the features in float32)."""
    captured: list[torch.Tensor] = []
    handle = classifier.register_forward_hook(
        lambda _m, inputs, _out: captured.append(inputs[0].detach().float().cpu()))
    labels = []
    was_training = model.training
    model.eval()
    try:
        for x, y in loader:
            model(x.to(device))
            labels.append(y)
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(captured), torch.cat(labels).long()


def _classifier_path(model: nn.Module, classifier: nn.Module, classifier_path: str | None) -> str:
    if classifier_path is not None:
        if model.get_submodule(classifier_path) is not classifier:
            raise ValueError(f"'{classifier_path}' is not the classifier given to the linear probe")
        return classifier_path
    paths = [name for name, m in model.named_modules(remove_duplicate=False) if m is classifier]
    if len(paths) != 1:
        raise ValueError(f"the classifier is at {len(paths)} places in the model; pass classifier_path=")
    return paths[0]


def _graph(model: nn.Module) -> fx.GraphModule:
    if isinstance(model, fx.GraphModule):
        return model
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - said in one line below
        raise ValueError(f"the linear probe needs an fx-traceable model to see what follows the classifier: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from exc


def logits_from_classifier(model: nn.Module, classifier: nn.Module,
                           classifier_path: str | None = None) -> Callable[[nn.Module], fx.GraphModule]:
    """``make(head)``: a module mapping what ``classifier`` receives to the model's logits, with
    ``head`` in the classifier's place and the rest of the model's graph after it (its own copies of
    any modules or tensors there, so training through it touches nothing in ``model``).

    ``model``'s forward may return the logits or a tuple whose first item is the logits.
    """
    path = _classifier_path(model, classifier, classifier_path)
    gm = _graph(model)
    calls = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == path]
    if len(calls) != 1:
        raise ValueError(f"the classifier '{path}' is called {len(calls)} times in the model's graph; "
                         "the linear probe needs it called once")
    start = calls[0]
    result = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if isinstance(result, (tuple, list)):
        result = result[0]
    after: set[fx.Node] = {start}
    for n in gm.graph.nodes:
        if any(a in after for a in n.all_input_nodes):
            after.add(n)
    if result not in after:
        raise ValueError(f"the model's logits do not depend on the classifier '{path}'")
    needed, todo = set(), [result]
    while todo:
        n = todo.pop()
        if n in needed or n not in after:
            continue
        needed.add(n)
        todo.extend(n.all_input_nodes)

    graph = fx.Graph()
    features = graph.placeholder("features")
    env = {start: graph.call_module(path, (features,))}
    attrs: dict[str, object] = {}

    def lookup(a: fx.Node) -> fx.Node:
        if a in env:
            return env[a]
        if a.op == "get_attr":
            obj: object = gm
            for part in str(a.target).split("."):
                obj = getattr(obj, part)
            attrs[str(a.target)] = obj.detach().clone() if isinstance(obj, torch.Tensor) else copy.deepcopy(obj)
            env[a] = graph.get_attr(a.target)
            return env[a]
        raise ValueError(f"the logits after the classifier '{path}' also read '{a.name}', which the classifier's "
                         "input does not give; the linear probe cannot compute them")

    for n in gm.graph.nodes:
        if n in needed and n is not start:
            env[n] = graph.node_copy(n, lookup)
            if n.op == "call_module" and n.target not in attrs:
                attrs[str(n.target)] = copy.deepcopy(gm.get_submodule(n.target)).requires_grad_(False)
    graph.output(env[result])
    graph.lint()

    def make(head: nn.Module) -> fx.GraphModule:
        tail = fx.GraphModule({**attrs, path: head}, copy.deepcopy(graph), "ClassifierToLogits")
        tail.eval()  # as the model runs during the probe (dropout off, batch-norms on their statistics)
        return tail

    return make


def _channel_stats(head: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per input channel of ``head``: the mean of the captured features ``x`` (zero where ``head``
    has no bias to take it back into), and the spread of all channels about their means."""
    dim = x.dim() - 1 if isinstance(head, nn.Linear) else 1
    channels = x.shape[dim]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for chunk in x.split(4096):
        rows = chunk.double().movedim(dim, -1).reshape(-1, channels)
        total += rows.sum(0)
        squares += (rows * rows).sum(0)
        count += rows.shape[0]
    centered = getattr(head, "bias", None) is not None
    mean = total / max(count, 1) if centered else torch.zeros(channels, dtype=torch.float64)
    spread = (squares / max(count, 1) - mean * mean).clamp_min(0).sqrt()
    overall = float(spread.pow(2).mean().sqrt())
    # one spread for every channel: per-channel spreads made the folded classifier's weights huge on
    # nearly constant channels, and a teacher that starts from it blew up once fine-tuning moved them
    value = overall if math.isfinite(overall) and overall > 0.0 else 1.0
    return mean.float(), torch.full((channels,), value, dtype=torch.float32)


class _Standardised(nn.Module):
    """``head`` applied to standardised features, ``(x - mean) / scale`` per input channel.

    ``scale`` is the channel's spread, times sqrt(kernel area) for a convolution, so that a 3x3
    classifier on a smooth map takes steps like a 1x1 one. A convolution pads first and
    standardises the padded map (zero padding becomes ``-mean / scale``): then :meth:`folded` is
    exact for every padding, group count and kernel size.
    """

    def __init__(self, head: nn.Module, mean: torch.Tensor, spread: torch.Tensor) -> None:
        super().__init__()
        self.head = head
        area = 1 if isinstance(head, nn.Linear) else math.prod(head.kernel_size)
        self.register_buffer("mean", mean.clone())
        self.register_buffer("scale", spread * math.sqrt(area))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head
        if isinstance(h, nn.Linear):
            return F.linear((x - self.mean) / self.scale, h.weight, h.bias)
        pads = h._reversed_padding_repeated_twice
        if any(pads):
            x = F.pad(x, pads, mode="constant" if h.padding_mode == "zeros" else h.padding_mode)
        z = (x - self.mean.view(1, -1, 1, 1)) / self.scale.view(1, -1, 1, 1)
        return F.conv2d(z, h.weight, h.bias, h.stride, 0, h.dilation, h.groups)

    @torch.no_grad()
    def folded(self) -> nn.Module:
        """A copy of the head that gives the same outputs on the raw features."""
        out = copy.deepcopy(self.head)
        w = out.weight
        mean, scale = self.mean.to(w), self.scale.to(w)
        if isinstance(out, nn.Linear):
            idx = torch.arange(w.shape[1], device=w.device).expand(w.shape[0], -1)
        else:  # output o of group g reads input channels g * (C / groups) + j
            per_in, per_out = w.shape[1], w.shape[0] // out.groups
            idx = (torch.arange(w.shape[0], device=w.device)[:, None] // per_out) * per_in \
                + torch.arange(per_in, device=w.device)
        w.div_(scale[idx].reshape(*idx.shape, *([1] * (w.dim() - 2))))
        if out.bias is not None:
            out.bias.sub_((w.reshape(*idx.shape, -1).sum(-1) * mean[idx]).sum(1))
        return out


def _accuracy(tail: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str) -> float:
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 1024):
            correct += int((tail(x[i:i + 1024].to(device)).argmax(1).cpu() == y[i:i + 1024]).sum())
    return 100.0 * correct / max(len(x), 1)


def linear_probe(model: nn.Module, classifier: nn.Module, train: DataLoader, evals: dict[str, DataLoader],
                 device: str, *, epochs: int = 30, lr: float = 0.05, batch_size: int = 256, seed: int = 0,
                 classifier_path: str | None = None) -> ProbeResult:
    """Train a fresh copy of ``classifier`` on the frozen ``model``'s features; its top-1 accuracy
    (percent) on every loader in ``evals``.

    ``model`` (an ``fx.GraphModule``, or a module fx can trace) runs in eval mode and is left as it
    was, weights and mode. Its forward may return the logits or ``(logits, feats)``; the logits are
    computed from the classifier's output as the model computes them (flatten, global pooling...).
    ``classifier_path``: the classifier's module path in ``model``; found by identity when omitted.
    SGD with momentum on standardised features (see the module's notes), cosine schedule;
    deterministic given ``seed`` whatever the global random state (which only the loaders' own
    iteration draws from).
    The returned head is on the classifier's device and dtype, with the standardisation folded in.
    """
    make_tail = logits_from_classifier(model, classifier, classifier_path)
    weight = next(classifier.parameters())
    x_train, y_train = classifier_inputs(model, classifier, train, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = copy.deepcopy(classifier).float().to(device).requires_grad_(True)
        head.reset_parameters()
    trainee = _Standardised(head, *_channel_stats(head, x_train)).to(device)
    tail = make_tail(trainee).to(device)
    with torch.no_grad():
        logits = tail(x_train[:2].to(device))
    if logits.dim() != 2:
        raise ValueError(f"the model's logits after its classifier have shape {tuple(logits.shape)}, not (N, classes)")
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    steps = epochs * math.ceil(len(x_train) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(tail(x_train[idx].to(device)), y_train[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    del x_train, y_train
    trained = trainee.folded().requires_grad_(False)
    folded = make_tail(trained).to(device)  # the head as the model would run it: on the raw features
    accuracy = {name: _accuracy(folded, *classifier_inputs(model, classifier, loader, device), device)
                for name, loader in evals.items()}
    trained.train(classifier.training)
    return ProbeResult(head=trained.to(device=weight.device, dtype=weight.dtype).requires_grad_(True),
                       accuracy=accuracy)
