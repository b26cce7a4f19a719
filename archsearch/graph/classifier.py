"""Give a traced network a new classifier for the target task.

The classifier is the head's last layer with parameters (:func:`archsearch.graph.trace.find_classifier`):
an ``nn.Linear`` (``pool → flatten → [dropout →] Linear``), or an ``nn.Conv2d`` whose output the rest
of the head pools or flattens to one logit per channel (``pool → 1x1 conv → flatten``,
``conv → ReLU → pool → flatten`` as SqueezeNet, ``conv → global pooling``). Any other head is refused
with one line that names what was found.
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from archsearch.errors import UserError
from archsearch.graph.blockgraph import OUTPUT, BlockGraph
from archsearch.graph.trace import build_block_graph, find_classifier, propagate_shapes


def _head_problem(bg: BlockGraph) -> str:
    """Why the traced head has no classifier archsearch can replace (one line)."""
    by_name = {n.name: n for n in bg.gm.graph.nodes}
    heads = [bg.edge(e) for e in bg.in_edges(OUTPUT) if bg.edge(e)["kind"] == "head"]
    nodes = [by_name[name] for name in heads[0]["nodes"]] if heads else []
    problem = find_classifier(bg.gm, nodes)[1]
    return problem or "the model's head has no nn.Linear or nn.Conv2d classifier to replace"


def new_classifier(old: nn.Module, num_classes: int) -> nn.Module:
    """A freshly initialised layer like ``old`` (same input, settings, device and dtype) with
    ``num_classes`` outputs."""
    weight = old.weight
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        # one output per class: a grouped classifier keeps its groups only where they divide the classes
        groups = old.groups if num_classes % old.groups == 0 else 1
        new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding, old.dilation,
                        groups, bias=old.bias is not None, padding_mode=old.padding_mode)
    return new.to(device=weight.device, dtype=weight.dtype)


def _runs_to_logits(gm: fx.GraphModule, input_shape: tuple[int, ...], num_classes: int) -> str | None:
    """None when ``gm`` maps one sample to logits of shape (1, num_classes), else what went wrong
    (one line). Run through an Interpreter: a GraphModule's own call prints its code on failure."""
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            out = fx.Interpreter(gm).run(torch.zeros((1, *input_shape)))
    except Exception as exc:  # noqa: BLE001 - any failure of the user's head becomes the refusal's reason
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    finally:
        gm.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes):
        shape = tuple(out.shape)[1:] if isinstance(out, torch.Tensor) else type(out).__name__
        return f"the model then returns {shape} per sample, not ({num_classes},)"
    return None


def replace_classifier(bg: BlockGraph, num_classes: int) -> BlockGraph:
    """New BlockGraph whose head ends in a freshly initialised classifier with ``num_classes`` outputs,
    so the model returns logits of shape (N, num_classes).

    The traced module is changed in place (its old classifier is dropped); costs are recomputed.
    A head archsearch cannot map raises :class:`UserError` with a one-line message (the module is
    then left as it was).
    """
    if num_classes < 1:
        raise UserError(f"cannot make a classifier with {num_classes} classes; the task needs at least one")
    target = bg.g.graph.get("classifier")
    if target is None:
        raise UserError(_head_problem(bg))
    old = bg.gm.get_submodule(target)
    new = new_classifier(old, num_classes)
    input_shape = bg.g.graph["input_shape"]
    bg.gm.set_submodule(target, new)
    reason = _runs_to_logits(bg.gm, input_shape, num_classes)
    if reason is not None:
        bg.gm.set_submodule(target, old)
        raise UserError(f"a new classifier '{target}' ({type(old).__name__}) with {num_classes} outputs breaks "
                        f"what follows it in the head ({reason}); archsearch needs only parameter-free operations "
                        "after the classifier (pooling, mean, flatten, activation, dropout), none that fixes "
                        "the number of classes")
    propagate_shapes(bg.gm, input_shape)
    return build_block_graph(bg.gm, input_shape)
