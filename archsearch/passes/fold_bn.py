"""Fold frozen batch-norms into the convolutions before them, for faster training of a student.

The universal blocks of a student (and the teacher, while it only supplies the teacher term) never
change and run in eval mode, so each conv → batch-norm pair is exactly one convolution: a pass over
the feature map saved in every forward and backward step. The folded convolutions are new modules;
the shared pre-trained modules they are made from are not touched.
"""
from __future__ import annotations

from collections import Counter

import torch.fx as fx
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _frozen(module: nn.Module) -> bool:
    return not module.training and not any(p.requires_grad for p in module.parameters())


def fold_frozen_batchnorms(gm: fx.GraphModule) -> int:
    """In place: replace each frozen, eval-mode Conv2d → BatchNorm2d pair by one folded Conv2d.

    Only pairs whose convolution feeds nothing but the batch-norm, and whose two modules are each
    called once in the graph, are folded (a module called twice, as in weight-shared models, would
    be replaced at every call); trainable or train-mode modules (proxies, a teacher being
    fine-tuned) are left alone. Returns the count.
    """
    modules = dict(gm.named_modules())
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or type(modules.get(node.target)) is not nn.BatchNorm2d or len(node.args) != 1:
            continue
        prev = node.args[0]
        if not (isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1
                and type(modules.get(prev.target)) is nn.Conv2d):
            continue
        conv, bn = modules[prev.target], modules[node.target]
        if calls[prev.target] != 1 or calls[node.target] != 1:
            continue
        if not (_frozen(conv) and _frozen(bn) and bn.track_running_stats):
            continue
        fused = fuse_conv_bn_eval(conv, bn).requires_grad_(False)
        parent, _, name = prev.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, name, fused)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        folded += 1
    if folded:
        gm.graph.lint()
        gm.recompile()
    return folded
