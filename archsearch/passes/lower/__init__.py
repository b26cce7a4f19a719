"""Lowering: the passes that turn a generated network into the form it runs fastest in.

Code generation (:mod:`archsearch.passes.codegen`) emits plain graphs: proxies as calls of their
``torch.nn`` layers, gates as multiplications. Each pass here is one small in-place rewrite of an
``fx.GraphModule`` that returns how many places it changed, in the style of ``torch/fx/passes``:

- :func:`functional_task_layers`: task layers as functional calls, batch-norms folded in;
- :func:`fold_gates`: a constant gate folded into the convolution it scales;
- :func:`share_pooling`: equal poolings of one map computed once;
- :func:`halving_pools`: max-pooling by 2**n as pairwise maxima;
- :func:`fuse_pointwise_sums`: a node's sum with its 1x1 products accumulated in place;
- :func:`relu_in_place`: the ReLU after an owned sum in place;
- :func:`drop_identities`: modules that pass maps through in evaluation removed;
- :func:`pointwise_as_matmul`: for training on CPU, 1x1 convolutions of task layers as matrix products.

:func:`lower_slim` runs the first seven in order.
"""
from __future__ import annotations

from typing import Callable

import torch.fx as fx

from archsearch.passes.lower.drop_identities import drop_identities
from archsearch.passes.lower.fold_gates import fold_gates
from archsearch.passes.lower.halving_pools import halving_pools
from archsearch.passes.lower.pointwise_as_matmul import pointwise_as_matmul
from archsearch.passes.lower.pointwise_sums import fuse_pointwise_sums
from archsearch.passes.lower.relu_in_place import relu_in_place
from archsearch.passes.lower.share_pooling import share_pooling
from archsearch.passes.lower.task_layers import functional_task_layers

__all__ = ["drop_identities", "fold_gates", "functional_task_layers", "fuse_pointwise_sums", "halving_pools",
           "lower_slim", "pointwise_as_matmul", "relu_in_place", "share_pooling"]


def lower_slim(gm: fx.GraphModule, is_task: Callable[[str], bool], pixels_major: bool) -> fx.GraphModule:
    """``gm`` (a plain slim graph from code generation) lowered in place to its inference form;
    ``pixels_major``: its maps run channels-last. Returns ``gm``."""
    functional_task_layers(gm, is_task)
    fold_gates(gm)
    share_pooling(gm)
    halving_pools(gm)
    fuse_pointwise_sums(gm, pixels_major)
    relu_in_place(gm)
    drop_identities(gm)
    return gm
