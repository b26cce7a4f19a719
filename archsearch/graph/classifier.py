"""Give a traced network a new classifier for the target task."""
from __future__ import annotations

import torch.nn as nn

from archsearch.errors import UserError
from archsearch.graph.blockgraph import BlockGraph
from archsearch.graph.trace import build_block_graph, propagate_shapes


def replace_classifier(bg: BlockGraph, num_classes: int) -> BlockGraph:
    """New BlockGraph whose head ends in a freshly initialised classifier with ``num_classes`` outputs.

    The traced module is changed in place (its old classifier is dropped); costs are recomputed.
    """
    target = bg.g.graph["classifier"]
    if target is None:
        raise UserError("the model's head has no nn.Linear or 1x1 nn.Conv2d classifier to replace; "
                        "end the model with an nn.Linear layer")
    old = bg.gm.get_submodule(target)
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        # one output per class: a grouped classifier keeps its groups only where they divide the classes
        groups = old.groups if num_classes % old.groups == 0 else 1
        new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding, old.dilation,
                        groups, bias=old.bias is not None, padding_mode=old.padding_mode)
    bg.gm.set_submodule(target, new)
    propagate_shapes(bg.gm, bg.g.graph["input_shape"])
    return build_block_graph(bg.gm, bg.g.graph["input_shape"])
