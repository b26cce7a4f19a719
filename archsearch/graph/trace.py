"""Trace any residual model with torch.fx and cut it into a BlockGraph.

A node of the fx graph is a *cut* when no data edge jumps over it in topological order: every path
from input to output passes through it. The stretches between consecutive cuts are segments; a
segment whose inside branches and joins again is a residual block. Nothing here looks at module
names or classes to find structure; names are only used as labels.

The model is traced in evaluation mode, and once more in training mode: a model whose two graphs
differ (a drop-path or dropout branch taken only in training, a batch-norm written as a function of
``self.training``) is refused with the module that differs, since one graph would silently stand
for both. Modules known to switch on the mode (``MODE_LEAVES``: stochastic depth, drop-path, timm's
norm-and-activation layers) are kept whole as leaves, so they keep doing so in the generated code.
"""
from __future__ import annotations

import operator
from typing import Any, Callable, Sequence

import networkx as nx
import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp

from archsearch.errors import UserError
from archsearch.graph.blockgraph import INPUT, OUTPUT, BlockGraph, node_name
from archsearch.graph.cost import MACS_META, count_macs, count_params, node_macs, nodes_parameters
from archsearch.notes import note

UNIVERSAL_LOGIT = 2.0
# Module classes (by name) whose forward depends on self.training: kept whole, never traced into.
# torchvision's StochasticDepth and timm's DropPath/DropBlock2d drop residual branches at random in
# training only; timm's norm-act layers call F.batch_norm with the mode as an argument.
STOCHASTIC_LEAVES = ("StochasticDepth", "DropPath", "DropBlock2d")
# A library's own subclass of a linear or convolution layer (timm's Linear, Conv2dSame, StdConv2d) is one
# layer too, as torch's own are: kept whole, so that a classifier is found as a module.
LAYER_LEAVES = (nn.Linear, nn.Conv2d)
MODE_LEAVES = (*STOCHASTIC_LEAVES, "BatchNormAct2d", "SyncBatchNormAct", "FrozenBatchNormAct2d", "GroupNormAct",
               "GroupNorm1Act", "LayerNormAct", "LayerNormAct2d")


class _Tracer(fx.Tracer):
    """fx tracer that honours user leaf modules and remembers which module a failure came from."""

    def __init__(self, leaf_modules: Sequence[str | type] = ()) -> None:
        super().__init__()
        self.leaf_modules = tuple(leaf_modules)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if type(m).__name__ in MODE_LEAVES or isinstance(m, LAYER_LEAVES):
            return True
        for leaf in self.leaf_modules:
            if isinstance(leaf, type) and isinstance(m, leaf):
                return True
            if isinstance(leaf, str) and leaf in (qualname, type(m).__name__):
                return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as exc:
            if not hasattr(exc, "archsearch_module"):
                exc.archsearch_module = (self.path_of_module(m), type(m).__name__)
            raise


def _trace_once(model: nn.Module, leaf_modules: Sequence[str | type], mode: str) -> tuple[fx.Graph, _Tracer]:
    """One fx trace of ``model`` as it is; a failure becomes a UserError that names the module."""
    tracer = _Tracer(leaf_modules)
    try:
        return tracer.trace(model), tracer
    except Exception as exc:
        path, cls = getattr(exc, "archsearch_module", ("", type(model).__name__))
        where = f"module '{path}' ({cls})" if path else f"the model's own forward ({cls})"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = (f"mark it a leaf with leaf_modules=['{cls}'] (CLI: --leaf {cls}) so it is kept as one "
                "opaque layer" if path else "rewrite the data-dependent part or move it into a submodule "
                "and mark that a leaf")
        raise UserError(f"torch.fx cannot trace {where}{mode}: {reason}; {hint}") from exc


def _signature(graph: fx.Graph) -> list[tuple[str, str, str]]:
    """Each node's operation, target and arguments, with nodes as positions: equal for two traces of
    the same computation (constants fx names by a counter are compared by kind)."""
    position: dict[fx.Node, int] = {}
    out = []
    for i, n in enumerate(graph.nodes):
        position[n] = i
        target = "_tensor_constant" if n.op == "get_attr" and str(n.target).startswith("_tensor_constant") else str(n.target)
        out.append((n.op, target, repr(fx.node.map_arg((n.args, n.kwargs), lambda a: position[a]))))
    return out


def _module_of(node: fx.Node, model: nn.Module) -> tuple[str, str]:
    """(path, class name) of the innermost module whose forward made ``node`` ('' for the model's own)."""
    if node.op == "call_module":
        return str(node.target), type(model.get_submodule(str(node.target))).__name__
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    if not stack:
        return "", type(model).__name__
    path, cls = stack[-1]
    return path, getattr(cls, "__name__", str(cls).rsplit(".", 1)[-1].strip("'>"))


def _mode_difference(model: nn.Module, evaluation: fx.Graph, training: fx.Graph) -> str | None:
    """None when both traces compute the same graph, else one line naming where they part."""
    a, b = _signature(evaluation), _signature(training)
    if a == b:
        return None
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    nodes_a, nodes_b = list(evaluation.nodes), list(training.nodes)
    path, cls = _module_of(nodes_b[i] if i < len(nodes_b) else nodes_a[i], model)
    where = f"module '{path}' ({cls})" if path else f"the model's own forward ({cls})"
    hint = (f"mark it a leaf with leaf_modules=['{cls}'] (CLI: --leaf {cls}) so it runs as its own module, "
            "switching with the mode" if path else
            "build it without training-time randomness (e.g. drop_rate=0, drop_path_rate=0) or move the "
            "mode-dependent part into a submodule and mark that a leaf")
    return (f"{where} computes a different graph in training than in evaluation (training-time randomness "
            f"such as drop-path or dropout, or a layer that switches on self.training); one trace cannot "
            f"stand for both: {hint}")


def _note_stochastic(gm: fx.GraphModule) -> None:
    """One note naming the stochastic modules kept whole (they still drop branches while training)."""
    found: dict[str, list[float]] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            module = gm.get_submodule(n.target)
            p = float(getattr(module, "p", getattr(module, "drop_prob", 0.0)) or 0.0)
            if type(module).__name__ in STOCHASTIC_LEAVES and p > 0:
                found.setdefault(type(module).__name__, []).append(p)
    for cls, ps in found.items():
        note(f"{len(ps)} {cls} modules (drop probability up to {max(ps):g}) are kept whole: while training they "
             "drop residual branches at random, as the model was trained, and in evaluation they pass maps through")


def symbolic_trace(model: nn.Module, leaf_modules: Sequence[str | type] = ()) -> fx.GraphModule:
    """fx-trace ``model`` in evaluation mode, checked against a trace in training mode (see the module's
    docstring); an untraceable module, a module whose graph depends on the mode, or a leaf name that
    matches no module becomes a UserError that names it. The model's modes are left as they were."""
    gm, difference = _traced(model, leaf_modules)
    if difference:
        raise UserError(difference)
    return gm


def _traced(model: nn.Module, leaf_modules: Sequence[str | type]) -> tuple[fx.GraphModule, str | None]:
    """The evaluation-mode GraphModule and, where the training-mode trace differs, one line saying where."""
    known = {name for name, _ in model.named_modules()} | {type(m).__name__ for m in model.modules()}
    unknown = [leaf for leaf in leaf_modules if isinstance(leaf, str) and leaf not in known]
    if unknown:
        raise UserError(f"leaf module '{unknown[0]}' matches no module path or class of {type(model).__name__}; "
                        "check the name with 'archsearch inspect' (paths) or the model's code (classes)")
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        graph, tracer = _trace_once(model, leaf_modules, "")
        model.train()
        training, _ = _trace_once(model, leaf_modules, " in training mode")
    finally:
        for m, mode in modes.items():
            m.training = mode
    difference = _mode_difference(model, graph, training)
    _functionalize_statements(graph)
    graph._tracer_cls = None  # saved modules must unpickle with plain torch, not this tracer
    for node in graph.nodes:  # string annotations (from __future__ import annotations) break pickling
        node.type = None
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm.training = modes[model]
    if not difference:
        _note_stochastic(gm)
    return gm, difference


def _out_of_place(node: fx.Node) -> str | Callable | None:
    """The out-of-place form of an in-place call (``x.add_(y)``, ``torch.relu_(x)``), or None."""
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    if not (isinstance(name, str) and name.endswith("_") and not name.endswith("__")):
        return None
    if node.op == "call_method":
        return name[:-1] if hasattr(torch.Tensor, name[:-1]) else None
    if node.op == "call_function" and getattr(torch, name, None) is node.target:
        return getattr(torch, name[:-1], None)
    return None


def _functionalize_statements(graph: fx.Graph) -> int:
    """In place: an in-place call whose result nothing reads (``out.add_(x)`` as a statement) becomes
    its out-of-place form, and every later reader of the tensor it changed reads its result instead.
    fx records such a call, but nothing depends on it, so blocks cut from the graph would leave it
    out and compute something else than the model. Returns the count."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    changed = 0
    for node in list(graph.nodes):
        if node.users or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        form = _out_of_place(node)
        if form is None:
            continue
        target = node.args[0]
        node.target = form
        for user in list(target.users):
            if user is not node and order[user] > order[node]:
                user.replace_input_with(target, node)
        changed += 1
    return changed


class _ShapesAndMacs(ShapeProp):
    """ShapeProp that also records each node's multiply-accumulates (graph/cost.py)."""

    def run_node(self, n: fx.Node) -> Any:
        out, n.meta[MACS_META] = count_macs(super().run_node, n)
        return out


def propagate_shapes(gm: fx.GraphModule, input_shape: Sequence[int]) -> None:
    """Record every node's output shape and MACs for one sample of ``input_shape`` (C, H, W)."""
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            gm(torch.zeros((1, *input_shape)))  # a plain run first: ShapeProp prints its own traceback
            _ShapesAndMacs(gm).propagate(torch.zeros((1, *input_shape)))
    except Exception as exc:
        raise UserError(
            f"the model does not run on input of shape {tuple(input_shape)}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}; "
            "pass the size it expects with --input-size C,H,W") from exc
    finally:
        gm.train(was_training)


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape)[1:] if meta is not None and hasattr(meta, "shape") else None


def _flow(gm: fx.GraphModule) -> tuple[list[fx.Node], fx.Node, fx.Node]:
    """Nodes on some input→output path, in topological order; plus the input and result nodes."""
    nodes = list(gm.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UserError(f"the model's forward takes {len(placeholders)} inputs; archsearch needs "
                        "a model with exactly one image tensor input")
    output = next(n for n in nodes if n.op == "output")
    result = output.args[0]
    if not isinstance(result, fx.Node):
        raise UserError("the model returns a tuple or dict; archsearch needs a model that returns "
                        "one tensor of logits (wrap it and return the logits)")
    (source,) = placeholders
    forward = nx.descendants(_dataflow(gm), source) | {source}
    backward = nx.ancestors(_dataflow(gm), result) | {result}
    return [n for n in nodes if n in forward and n in backward], source, result


def _dataflow(gm: fx.GraphModule) -> nx.DiGraph:
    g = nx.MultiDiGraph()
    for n in gm.graph.nodes:
        g.add_node(n)
        for a in n.all_input_nodes:
            g.add_edge(a, n)
    return g


def find_cuts(flow: list[fx.Node]) -> list[int]:
    """Positions in ``flow`` of nodes that no data edge jumps over."""
    pos = {n: i for i, n in enumerate(flow)}
    cover = [0] * (len(flow) + 1)
    for n in flow:
        for user in n.users:
            j = pos.get(user)
            if j is not None and j > pos[n] + 1:
                cover[pos[n] + 1] += 1
                cover[j] -= 1
    cuts, running = [], 0
    for i in range(len(flow)):
        running += cover[i]
        if running == 0:
            cuts.append(i)
    return cuts


# Two paths meeting in one of these scale a map by another (squeeze-excitation, attention weights):
# a gate inside a layer, not a residual join of two paths.
_SCALINGS = {operator.mul, operator.truediv, torch.mul, torch.div, "mul", "mul_", "div", "div_"}


def _is_join(segment: list[fx.Node], start: fx.Node) -> bool:
    """True when the segment branches from its start and its paths are summed or concatenated again
    (a residual block)."""
    inside = set(segment) | {start}
    for n in segment:
        tensor_inputs = {a for a in n.all_input_nodes if a in inside and _shape(a) is not None}
        if len(tensor_inputs) >= 2 and not (n.op in ("call_function", "call_method") and n.target in _SCALINGS):
            return True
    return False


class _Block:
    def __init__(self, nodes: list[fx.Node], residual: bool) -> None:
        self.nodes = nodes
        self.post: list[fx.Node] = []
        self.residual = residual


def _group(gm: fx.GraphModule, flow: list[fx.Node], cuts: list[int]) -> tuple[list[fx.Node], list[_Block], list[fx.Node]]:
    """Split the flow into stem, universal blocks (with their post-join ops) and head.

    A straight run between two residual blocks becomes a universal block of its own when it does
    real work (convolutions or linear layers, e.g. a MobileNet-style downsampling block); a run of
    free operations (a pre-activation block's leading BN-ReLU) joins the residual block after it.
    """
    segments = [(flow[cuts[i - 1]], flow[cuts[i - 1] + 1: cuts[i] + 1]) for i in range(1, len(cuts))]
    residual = [_is_join(seg, start) for start, seg in segments]
    if not any(residual):
        return _chain(gm, segments)
    first = residual.index(True)
    stem = [n for _, seg in segments[:first] for n in seg]
    blocks: list[_Block] = []
    straight: list[fx.Node] = []
    for i in range(first, len(segments)):
        seg = segments[i][1]
        if residual[i]:
            if straight and any(node_macs(n) for n in straight):
                blocks.append(_Block(straight, residual=False))
                straight = []
            blocks.append(_Block(straight + list(seg), residual=True))
            straight = []
            continue
        block = blocks[-1]
        if not straight and block.residual and _is_post(gm, seg, block):
            block.post.extend(seg)
        else:
            straight.extend(seg)
    return stem, blocks, straight


def _chain(gm: fx.GraphModule, segments: list[tuple[fx.Node, list[fx.Node]]]
           ) -> tuple[list[fx.Node], list[_Block], list[fx.Node]]:
    """Stem, blocks and head of a network without any residual block (VGG, AlexNet): every layer that
    does real work on a feature map, with the free operations after it (activation, pooling), is a
    universal block, the first one the stem; the head starts where the maps end (flatten, global
    pooling), or at the last such layer when no layer with parameters follows them. A chain of fewer
    than two such layers is refused: it has no block a proxy could stand in for."""
    layers: list[list[fx.Node]] = []
    head: list[fx.Node] = []
    for _, seg in segments:
        if head or len(_shape(seg[-1]) or ()) != 3:
            head.extend(seg)
        elif any(node_macs(n) for n in seg) or not layers:
            layers.append(list(seg))
        else:
            layers[-1].extend(seg)
    if layers and not nodes_parameters(gm, head):
        head = layers.pop() + head
    if len(layers) < 2:
        kinds = sorted({str(n.target).split(".")[-1] if n.op == "call_module" else getattr(n.target, "__name__", str(n.target))
                        for _, seg in segments for n in seg if n.op in ("call_module", "call_function")})
        raise UserError(f"the model has no residual block: its {len(segments)} layers ({', '.join(kinds[:6])}) form "
                        f"one straight chain with {len(layers)} layer(s) of weights on its feature maps, too few for a "
                        "block a proxy could stand in for; archsearch tailors networks with skip connections "
                        "(ResNet-style) or chains of several convolutions (VGG-style)")
    return layers[0], [_Block(nodes, residual=False) for nodes in layers[1:]], head


def _is_post(gm: fx.GraphModule, seg: list[fx.Node], block: _Block) -> bool:
    """A shape-preserving activation right after a join: parameter-free, or a PReLU with its weight.
    A batch-norm there is the next block's pre-activation and stays with that block."""
    parametric = [n for n in seg if nodes_parameters(gm, [n])]
    return (all(n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.PReLU) for n in parametric)
            and not any(node_macs(n) for n in seg) and _shape(seg[-1]) == _shape(block.nodes[-1]))


def _label(gm: fx.GraphModule, nodes: list[fx.Node], fallback: str, one_layer_path: bool = True) -> str:
    """The longest module path the block's own layers share (a module with parameters belongs to
    one block; a parameter-free one, such as a ReLU, may be called from every block); a block of one
    layer is named by that layer's path unless ``one_layer_path`` is off (the stem and head keep
    their role's name)."""
    targets = [str(n.target).split(".") for n in nodes
               if n.op == "call_module" and next(gm.get_submodule(n.target).parameters(), None) is not None]
    if not targets:
        return fallback
    if one_layer_path and all(t == targets[0] for t in targets):
        return ".".join(targets[0])
    prefix = targets[0][:-1]
    for t in targets[1:]:
        k = 0
        while k < min(len(prefix), len(t) - 1) and prefix[k] == t[k]:
            k += 1
        prefix = prefix[:k]
    return ".".join(prefix) or fallback


def _constants_feeding(nodes: list[fx.Node], on_flow: set[fx.Node]) -> list[fx.Node]:
    """The nodes off the data flow that ``nodes`` read, directly or through each other: parameters a
    block reads through an operation on them (a layer scale ``x * self.gamma.reshape(1, -1, 1, 1)``)."""
    found: dict[fx.Node, None] = {}
    todo = [a for n in nodes for a in n.all_input_nodes if a not in on_flow]
    while todo:
        a = todo.pop()
        if a not in found:
            found[a] = None
            todo.extend(b for b in a.all_input_nodes if b not in on_flow)
    return list(found)


def _edge_cost(gm: fx.GraphModule, nodes: list[fx.Node], on_flow: set[fx.Node]) -> tuple[int, list[torch.Tensor]]:
    return sum(node_macs(n) for n in nodes), nodes_parameters(gm, nodes + _constants_feeding(nodes, on_flow))


CLASSIFIER_TYPES = (nn.Linear, nn.Conv2d)
_HEAD_FORMS = ("archsearch replaces the head's last layer with parameters, which must be an nn.Linear "
               "(pool, flatten, Linear) or an nn.Conv2d whose map is globally pooled or 1x1 and flattened, "
               "followed only by parameter-free operations (pooling, mean, flatten, activation, dropout)")


def _state_of(gm: fx.GraphModule, n: fx.Node) -> list[tuple[str, torch.Tensor]]:
    """The (path, tensor) pairs of weights a head node reads: its module's parameters and buffers, and
    the non-scalar tensor attributes it takes as inputs (a scalar, such as a logit temperature, does
    not depend on the number of classes)."""
    found: list[tuple[str, torch.Tensor]] = []
    if n.op == "call_module":
        module = gm.get_submodule(n.target)
        found += [(f"{n.target}.{k}", t) for k, t in (*module.named_parameters(), *module.named_buffers())]
    for a in n.all_input_nodes:
        if a.op == "get_attr":
            obj: Any = gm
            for part in str(a.target).split("."):
                obj = getattr(obj, part)
            if isinstance(obj, torch.Tensor) and obj.numel() > 1:
                found.append((str(a.target), obj))
    return found


def _what(gm: fx.GraphModule, n: fx.Node) -> str:
    """A head node as a user reads it: ``'fc' (Linear)`` or ``operation 'linear' (linear)``."""
    if n.op == "call_module":
        return f"'{n.target}' ({type(gm.get_submodule(n.target)).__name__})"
    tensors = [str(a.target) for a in n.all_input_nodes if a.op == "get_attr"]
    on = f" on tensor '{tensors[0]}', not a module" if tensors else ""
    return f"operation '{n.name}' ({getattr(n.target, '__name__', n.target)}){on}"


def _outputs(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def find_classifier(gm: fx.GraphModule, head: Sequence[fx.Node]) -> tuple[str | None, str | None]:
    """The head's classifier: ``(module path, None)``, or ``(None, one line saying why archsearch
    cannot replace it)``.

    The classifier is the head's last layer with parameters. It must be an ``nn.Linear`` or
    ``nn.Conv2d`` module, and what follows it must turn its output into the model's output of shape
    (N, K), K its number of outputs: a flatten of a 1x1 map, global pooling or a mean over the map,
    activations, dropout. That covers ``pool → flatten → Linear`` (torchvision ResNet, with dropout as
    MobileNet), ``pool → 1x1 conv → flatten`` and ``conv → ReLU → pool → flatten`` (SqueezeNet), and
    ``conv → global pooling``; a layer before the classifier (``Linear → ReLU → Linear``) stays.
    """
    head = list(head)
    if not head:
        return None, ("the model ends at its last residual block, with no classifier after it; "
                      "end it with global pooling, flatten and an nn.Linear")
    stateful = [n for n in head if _state_of(gm, n)]
    if not stateful:
        return None, ("the model's head (after its last residual block) has no layer with parameters, so no "
                      "classifier to replace; end the model with global pooling, flatten and an nn.Linear")
    last = stateful[-1]
    module = gm.get_submodule(last.target) if last.op == "call_module" else None
    if not isinstance(module, CLASSIFIER_TYPES):
        earlier = [n for n in stateful[:-1] if n.op == "call_module"
                   and isinstance(gm.get_submodule(n.target), CLASSIFIER_TYPES)]
        after = f" after {_what(gm, earlier[-1])}" if earlier else ""
        return None, f"the model's head ends in {_what(gm, last)}{after}; {_HEAD_FORMS}"
    result, k = head[-1], _outputs(module)
    out = _shape(result)
    if out is None or len(out) != 1:
        shape = "(N, " + ", ".join(map(str, out)) + ")" if out is not None else "no single tensor"
        return None, (f"the model returns {shape} per batch after its classifier {_what(gm, last)}; archsearch "
                      "needs logits of shape (N, classes): pool and flatten the classifier's output")
    if out[0] != k:
        return None, (f"the model returns {out[0]} values per sample but its classifier {_what(gm, last)} has "
                      f"{k} outputs; {_HEAD_FORMS}")
    return str(last.target), None


def _classifier(gm: fx.GraphModule, head: list[fx.Node]) -> str | None:
    """Module path of the head's classifier, or None where archsearch cannot replace it (see
    :func:`find_classifier`, which also says why)."""
    return find_classifier(gm, head)[0]


def build_block_graph(gm: fx.GraphModule, input_shape: Sequence[int]) -> BlockGraph:
    """Cut a shape-propagated GraphModule into a BlockGraph (no proxies yet)."""
    flow, source, result = _flow(gm)
    on_flow = set(flow)
    # a node that yields several tensors (chunk, split) is not a boundary: no single map crosses it
    cuts = [c for c in find_cuts(flow) if _shape(flow[c]) is not None]
    stem, blocks, head = _group(gm, flow, cuts)
    g = nx.MultiDiGraph()
    g.add_node(INPUT, index=-1, shape=tuple(input_shape), fx=source.name, pre=source.name, post=[])
    x0 = stem[-1] if stem else source
    g.add_node(node_name(0), index=0, shape=_shape(x0), fx=x0.name, pre=x0.name, post=[])
    all_params: list[torch.Tensor] = []

    def add_edge(u: str, v: str, kind: str, name: str, nodes: list[fx.Node], out: fx.Node, **extra: Any) -> None:
        macs, tensors = _edge_cost(gm, nodes, on_flow)
        all_params.extend(tensors)
        g.add_edge(u, v, key=kind, kind=kind, name=name, nodes=[n.name for n in nodes], in_node=g.nodes[u]["fx"],
                   out_node=out.name, in_shape=g.nodes[u]["shape"], out_shape=_shape(out), macs=macs,
                   params=count_params(tensors), **extra)

    add_edge(INPUT, node_name(0), "stem", _label(gm, stem, "stem", one_layer_path=False), stem, x0)
    names: set[str] = set()
    for index, block in enumerate(blocks, start=1):
        pre, value = block.nodes[-1], (block.post or block.nodes)[-1]
        all_params.extend(nodes_parameters(gm, block.post))
        g.add_node(node_name(index), index=index, shape=_shape(value), fx=value.name, pre=pre.name,
                   post=[n.name for n in block.post])
        name = _label(gm, block.nodes, f"block{index}")
        name = name if name not in names else f"{name}#{index}"
        names.add(name)
        add_edge(node_name(index - 1), node_name(index), "universal", name, block.nodes, pre, logit=UNIVERSAL_LOGIT)
    last = node_name(len(blocks))
    g.add_node(OUTPUT, index=len(blocks) + 1, shape=_shape(result), fx=result.name, pre=result.name, post=[])
    add_edge(last, OUTPUT, "head", _label(gm, head, "head", one_layer_path=False), head, result)
    g.graph.update(total_macs=sum(m for _, _, m in g.edges(data="macs")), total_params=count_params(all_params),
                   classifier=_classifier(gm, head), input_shape=tuple(input_shape))
    return BlockGraph(g, gm)


SUPPORTED = ("archsearch tailors 2-d convolutional networks, whose residual blocks map (channels, height, width) "
             "feature maps to feature maps (ResNet, ResNeXt, RegNet, DenseNet, MobileNet, EfficientNet, ConvNeXt "
             "and the like), not vision transformers or Swin")


def _convolves(gm: fx.GraphModule, n: fx.Node) -> bool:
    if n.op == "call_module":
        return any(isinstance(m, nn.Conv2d) for m in gm.get_submodule(n.target).modules())
    return n.op == "call_function" and n.target in (torch.nn.functional.conv2d, torch.conv2d)


def feature_map_problem(bg: BlockGraph) -> str | None:
    """None when the blocks work on convolutional feature maps, which proxies need; else one line on
    what the model's blocks work on and what archsearch supports (a ViT's blocks map token sequences,
    a Swin's attend over channels-last windows and convolve nothing)."""
    blocks = list(bg.iter_attrs("universal"))
    flat = [a for _, a in blocks if len(a["out_shape"] or ()) != 3]
    if flat:
        shape = tuple(flat[0]["out_shape"] or ())
        return (f"block {flat[0]['name']!r} joins tensors of shape {shape} (a token sequence or vector, not a "
                f"feature map); {SUPPORTED}")
    by_name = {n.name: n for n in bg.gm.graph.nodes}
    if blocks and not any(_convolves(bg.gm, by_name[name]) for _, a in blocks for name in a["nodes"]):
        return f"none of the model's {len(blocks)} blocks convolves its input (attention or MLP blocks); {SUPPORTED}"
    return None


def trace(model: nn.Module, input_shape: Sequence[int], leaf_modules: Sequence[str | type] = ()) -> BlockGraph:
    """Model → BlockGraph: fx trace, shape propagation on one sample, cuts into blocks.

    A model whose graph depends on the mode is refused (:func:`symbolic_trace`), unless it has no
    convolutional feature maps at all (a Swin's attention dropout): that is the line it then gets."""
    gm, difference = _traced(model, leaf_modules)
    if difference:
        try:
            propagate_shapes(gm, input_shape)
            problem = feature_map_problem(build_block_graph(gm, input_shape))
        except UserError:
            problem = None
        raise UserError(problem or difference)
    propagate_shapes(gm, input_shape)
    return build_block_graph(gm, input_shape)
