"""The BlockGraph: the one structure every stage of archsearch reads.

Nodes are block-boundary tensors (``input``, ``x0`` … ``xL``, ``logits``); edges are blocks
(``stem``, ``universal``, ``proxy``, ``head``). Edges that come from the traced model name the fx
nodes they own in :attr:`BlockGraph.gm`; proxy edges carry their own module. Passes return new
BlockGraphs that share ``gm`` and the modules, so the universal blocks are never copied.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterator

import networkx as nx
import torch
import torch.fx as fx

from archsearch.graph.cost import count_params, nodes_parameters

INPUT = "input"
OUTPUT = "logits"
GATED_KINDS = ("universal", "proxy")

Edge = tuple[str, str, str]  # (source node, destination node, kind): a proxy may run beside a block


def node_name(index: int) -> str:
    """Name of the block-boundary node x_index."""
    return f"x{index}"


@dataclass
class BlockGraph:
    """A residual network as a chain of block-boundary nodes joined by blocks.

    ``g`` is a ``networkx.MultiDiGraph`` keyed by edge kind (the proxy from x_{l-1} runs parallel to
    block l). Node attributes: ``index`` (−1 input, 0..L, L+1 logits),
    ``shape`` (tensor shape without batch), ``fx`` (fx node whose value *is* the node), ``pre``
    (fx node the gated sum replaces) and ``post`` (fx nodes applied after the sum, e.g. a trailing
    ReLU). Edge attributes: ``kind``, ``name``, ``nodes`` (owned fx node names, in order),
    ``in_node``/``out_node`` (fx names of the edge's input and result), ``in_shape``,
    ``out_shape``, ``macs``, ``params``, ``logit`` (initial gate logit), ``module`` (proxies).
    Graph attributes: ``total_macs``, ``total_params`` (of the original network),
    ``classifier`` (fx target of the task classifier), ``input_shape``.
    """

    g: nx.MultiDiGraph
    gm: fx.GraphModule
    meta: dict = field(default_factory=dict)

    # -- structure -------------------------------------------------------------------------
    @property
    def last(self) -> str:
        """Name of x_L, the node the head reads."""
        return node_name(self.g.nodes[OUTPUT]["index"] - 1)

    def block_nodes(self) -> list[str]:
        """The block-boundary nodes x_0..x_L that are present, in order."""
        nodes = [n for n in self.g.nodes if n not in (INPUT, OUTPUT)]
        return sorted(nodes, key=lambda n: self.g.nodes[n]["index"])

    def edges(self, kind: str | tuple[str, ...] | None = None) -> list[Edge]:
        """Edges of the given kind(s), ordered by destination then source (deterministic)."""
        kinds = (kind,) if isinstance(kind, str) else kind
        return sorted((e for e in self.g.edges(keys=True) if kinds is None or e[2] in kinds), key=self._order)

    def _order(self, e: Edge) -> tuple[int, int, int]:
        """Destination, then kind (stem/universal/head before proxies), then nearest source first."""
        idx = self.g.nodes
        return idx[e[1]]["index"], _kind_rank(e[2]), -idx[e[0]]["index"]

    def gated_edges(self) -> list[Edge]:
        """Universal and proxy edges: the ones a gate weighs."""
        return self.edges(GATED_KINDS)

    def in_edges(self, node: str) -> list[Edge]:
        """Edges entering ``node`` in gate-slot order: universal first, then nearest proxies."""
        return sorted(self.g.in_edges(node, keys=True), key=self._order)

    def out_edges(self, node: str) -> list[Edge]:
        """Edges leaving ``node``, deterministic order."""
        return sorted(self.g.out_edges(node, keys=True), key=self._order)

    def edge(self, e: Edge) -> dict:
        """Attribute dict of edge ``e``."""
        return self.g.edges[e]

    def node(self, n: str) -> dict:
        """Attribute dict of node ``n``."""
        return self.g.nodes[n]

    def universal(self) -> list[Edge]:
        """Universal (pre-trained, shared) blocks, in order."""
        return self.edges("universal")

    def proxies(self) -> list[Edge]:
        """Task-specific proxy edges, in order."""
        return self.edges("proxy")

    def iter_attrs(self, kind: str | tuple[str, ...] | None = None) -> Iterator[tuple[Edge, dict]]:
        """Pairs of (edge, attributes) in deterministic order."""
        for e in self.edges(kind):
            yield e, self.g.edges[e]

    def copy(self) -> "BlockGraph":
        """A new BlockGraph with its own networkx graph; gm and modules are shared."""
        return BlockGraph(self.g.copy(), self.gm, dict(self.meta))

    def with_own_task_modules(self) -> "BlockGraph":
        """A copy whose task-specific modules (proxies, classifier) are its own copies, so training
        it leaves every other graph as it was; the universal blocks stay the very same modules."""
        out = self.copy()
        for _, _, attrs in out.g.edges(data=True):
            if attrs.get("module") is not None:
                attrs["module"] = copy.deepcopy(attrs["module"])
        gm = fx.GraphModule(self.gm, copy.deepcopy(self.gm.graph), self.gm.__class__.__name__)
        classifier = self.g.graph.get("classifier")
        if classifier:
            gm.set_submodule(classifier, copy.deepcopy(self.gm.get_submodule(classifier)))
        out.gm = gm
        return out

    @property
    def total_macs(self) -> int:
        """MACs of the original pre-trained network (stem and head included)."""
        return self.g.graph["total_macs"]

    @property
    def total_params(self) -> int:
        """Parameters of the original network."""
        return self.g.graph["total_params"]

    def macs(self) -> int:
        """MACs of the network this graph describes, every edge counted once."""
        return sum(d["macs"] for _, d in self.iter_attrs())

    def cost_share(self, edge: Edge) -> float:
        """An edge's cost as a share of the original network's: its measured seconds where the graph
        carries them (``passes.measure``, ``--cost latency``), else its MACs."""
        attrs, total = self.edge(edge), self.g.graph.get("total_seconds")
        return attrs["seconds"] / total if total else attrs["macs"] / self.total_macs

    def cost(self) -> float:
        """Cost of the network this graph describes as a share of the original's (see cost_share)."""
        return sum(self.cost_share(e) for e in self.edges())

    def task_params(self) -> int:
        """Parameters a task adds to the shared blocks: its proxies, its classifier, and one gate per
        edge into a node that sums several (the head's other layers are frozen, so shared)."""
        classifier = self.g.graph.get("classifier")
        head = sum(p.numel() for p in self.gm.get_submodule(classifier).parameters()) if classifier else 0
        gates = sum(len(self.in_edges(n)) for n in self.block_nodes() if len(self.in_edges(n)) > 1)
        return head + gates + sum(self.edge(e)["params"] for e in self.proxies())

    def params(self) -> int:
        """Parameters of the network this graph describes (its edges and the nodes' trailing ops),
        each tensor once however many edges read it (a module called twice is one module)."""
        by_name = {n.name: n for n in self.gm.graph.nodes}
        tensors: list[torch.Tensor] = []
        for _, attrs in self.iter_attrs():
            if attrs["kind"] == "proxy":
                tensors.extend(attrs["module"].parameters())
            else:
                tensors.extend(nodes_parameters(self.gm, (by_name[n] for n in attrs["nodes"])))
        for n in self.block_nodes():
            tensors.extend(nodes_parameters(self.gm, (by_name[m] for m in self.node(n)["post"])))
        return count_params(tensors)


def _kind_rank(kind: str) -> int:
    return {"stem": 0, "universal": 1, "head": 1, "proxy": 2}[kind]
