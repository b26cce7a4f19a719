"""Lowering pass: task-specific layers as functional calls, each batch-norm folded into the
convolution before it.

A slim network only evaluates, so a convolution followed by a batch-norm in evaluation is one
convolution with a bias (one pass over the feature map fewer), and a module call is a call of its
function on its own tensors: the task's tensors can then be stored as data in a task pack. Only
modules ``is_task(target)`` accepts are lowered: the universal blocks stay the very modules every
task shares.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights

from archsearch.passes.lower.graph_edit import finish, own_container, set_tensor, swap

POOLS = (nn.MaxPool2d, nn.AdaptiveMaxPool2d)


def _folded_bn(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The batch-norm call that is the only user of conv call ``node``, where it can be folded."""
    if len(node.users) != 1:
        return None
    (user,) = node.users
    bn = modules.get(user.target) if user.op == "call_module" else None
    if type(bn) is nn.BatchNorm2d and bn.track_running_stats and bn.running_mean is not None and len(user.args) == 1:
        return user
    return None


def _lower(gm: fx.GraphModule, node: fx.Node, module: nn.Module, modules: dict[str, nn.Module],
           gone: set[fx.Node]) -> fx.Node | None:
    """The functional replacement of one module call (inserted before it), or None to keep it. A
    batch-norm folded into it is erased and added to ``gone``."""
    graph, x, target = gm.graph, node.args[0], node.target
    if type(module) is nn.Conv2d and module.padding_mode == "zeros":  # a subclass may compute otherwise
        weight = module.weight.detach()
        bias = module.bias.detach() if module.bias is not None else weight.new_zeros(module.out_channels)
        bn_node = _folded_bn(node, modules)
        if bn_node is not None:
            bn = modules[bn_node.target]
            weight, bias = fuse_conv_bn_weights(weight, bias, bn.running_mean, bn.running_var, bn.eps,
                                                bn.weight, bn.bias)
        own_container(gm, target)
        set_tensor(gm, f"{target}.weight", weight.detach().clone())
        set_tensor(gm, f"{target}.bias", bias.detach().clone())
        with graph.inserting_before(node):
            out = graph.call_function(F.conv2d, (x, graph.get_attr(f"{target}.weight"), graph.get_attr(f"{target}.bias"),
                                                 module.stride, module.padding, module.dilation, module.groups))
        if bn_node is not None:
            swap(gm, bn_node, out)  # a mark on the batch-norm's value (a node's sum) stays on its value
            gone.add(bn_node)
        return out
    if type(module) is nn.Linear:
        own_container(gm, target)
        set_tensor(gm, f"{target}.weight", module.weight.detach().clone())
        if module.bias is not None:
            set_tensor(gm, f"{target}.bias", module.bias.detach().clone())
        with graph.inserting_before(node):
            bias = graph.get_attr(f"{target}.bias") if module.bias is not None else None
            return graph.call_function(F.linear, (x, graph.get_attr(f"{target}.weight"), bias))
    with graph.inserting_before(node):
        if type(module) is nn.ReLU:
            return graph.call_function(F.relu, (x,))
        if type(module) is nn.MaxPool2d:
            return graph.call_function(F.max_pool2d, (x, module.kernel_size, module.stride, module.padding,
                                                      module.dilation, module.ceil_mode))
        if type(module) is nn.AdaptiveMaxPool2d:
            return graph.call_function(F.adaptive_max_pool2d, (x, module.output_size))
    return None


def functional_task_layers(gm: fx.GraphModule, is_task: Callable[[str], bool]) -> int:
    """In place: every one-argument call of a task module (``is_task(target)``) that is a Conv2d (with
    the batch-norm after it folded in), Linear, ReLU or max-pooling becomes a functional call on
    tensors of its own. Returns the count of modules lowered."""
    modules = dict(gm.named_modules())
    lowered, gone = 0, set()
    for node in list(gm.graph.nodes):
        if node in gone or node.op != "call_module" or node.kwargs or len(node.args) != 1 or not is_task(node.target):
            continue
        with torch.no_grad():
            out = _lower(gm, node, modules[node.target], modules, gone)
        if out is None:
            continue
        swap(gm, node, out)
        lowered += 1
    return finish(gm, lowered)
