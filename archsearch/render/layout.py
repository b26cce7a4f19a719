"""Where everything goes in a picture of tailored architectures (Figure 4 of the NetTailor paper).

Pure: from an architecture dict to a :class:`Layout` (bands of items with their columns, and edges,
all with their DOT attributes as plain strings); :mod:`archsearch.render.draw` turns that into a
Graphviz graph. Tested without Graphviz.

The input is an *architecture dict* (:func:`archsearch.graph.serialize.architecture_dict`): every
node and block of the student, each block with whether it survived the pruning and its gate alpha.

The layout (drawn left to right):

* the block-boundary tensors ``x0 … xL`` are small circles on one straight line, with ``input``
  before and ``logits`` after them;
* every block is its own box *on* the line between its two nodes: pre-trained, shared blocks
  (the stem and the universal blocks) grey, task-specific ones (proxies and the classifier head)
  green; removed blocks are hidden, or faded and dashed with ``show_removed=True``;
* a proxy from ``x_s`` to ``x_d`` is a small green box in the block column nearest the middle of
  its two nodes, so a skip over three blocks is drawn as a low arc; the columns of the nodes stay
  narrow, and a ResNet with three skips has at most four boxes in one column;
* a block whose node sums several live blocks shows its gate ``α=0.93`` as the last line of its box
  (the box sits on the gated edge; a label on the short edge itself would hide behind the boxes),
  and the pen width of its edge into the node grows with alpha. A node with a single live input has
  no gate in the tailored network and shows none;
* long networks wrap into rows (whole stages where they fit). A row after the first starts with
  dashed copies of the nodes that feed it from the previous row;
* every column holds the same blocks in every row and in every stacked network (``newrank`` plus one
  ``rank=same`` group per column), so :func:`stack_dot` shows several tailorings of one backbone
  block by block.

The DOT text depends on nothing but the dict: everything is sorted, floats have fixed precision and
node ids come from node indices, so the same architecture always gives the same bytes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import graphviz

from archsearch.errors import UserError

MAX_ROW_BLOCKS = 10  # automatic wrapping: at most this many universal blocks per row
GHOST_SPAN = 3  # a row shows at most this many columns of copied nodes from the rows before it

_GREY = {"fillcolor": "#d9d9d9", "color": "#595959", "fontcolor": "#000000"}
_GREEN = {"fillcolor": "#b7e1a1", "color": "#2e7d32", "fontcolor": "#000000"}
_FADED = {"fillcolor": "#f7f7f7", "color": "#bdbdbd", "fontcolor": "#9e9e9e"}
_LINE = {"universal": "#595959", "stem": "#595959", "head": "#2e7d32", "proxy": "#2e7d32"}
_FADED_LINE = "#c8c8c8"
END_WIDTH = "0.8"  # least width of input and logits, and of the invisible ends of every band: frames line up
LEGEND = ("grey: pre-trained blocks that every task shares (stem, universal blocks)\\l"
           "green: task-specific blocks (proxy xs→xd: from node xs to node xd; classifier)\\l"
           "α: gate weight where a node sums several blocks; line width grows with α\\l")
_KIND_RANK = {"stem": 0, "universal": 1, "head": 1, "proxy": 2}
_EDGE_KEYS = ("src", "dst", "kind", "name", "out_shape", "macs", "params", "live")


# --------------------------------------------------------------------------------------- formatting
def si(value: float) -> str:
    """``4718592`` -> ``"4.72M"``: three significant digits and a unit letter, deterministic."""
    v = float(value)
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div * 0.9995:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}" if v != int(v) else str(int(v))


def _shape(shape: Iterable[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "n/a"


def esc(text: str) -> str:
    """A user string as literal DOT text (backslashes are not escape sequences)."""
    return graphviz.escape(str(text))


def lines(*parts: str) -> str:
    """Non-empty parts as the lines of one DOT label."""
    return "\\n".join(esc(p) for p in parts if p)


def _num(v: float) -> str:
    return f"{v:.2f}"


# --------------------------------------------------------------------------------------- the input
@dataclass(frozen=True)
class Arch:
    """An architecture dict, checked and sorted: what the layout reads."""


    name: str
    index: dict[str, int]  # node name -> index (input -1, x_l l, logits L+1)
    shape: dict[str, tuple[int, ...]]
    edges: tuple[dict, ...]  # sorted: destination, kind, nearest source first
    totals: dict
    last: int  # L

    def live_nodes(self) -> set[str]:
        out = {"input", "logits"}
        for e in self.edges:
            if e["live"]:
                out |= {e["src"], e["dst"]}
        return out

    def universal(self) -> list[tuple[str, int, int]]:
        """(name, source index, destination index) of every universal block, in order."""
        return [(e["name"], self.index[e["src"]], self.index[e["dst"]]) for e in self.edges if e["kind"] == "universal"]


def parse(arch: Any, what: str = "architecture") -> Arch:
    """``arch`` checked as an architecture dict (``what`` names it in errors), its edges sorted."""
    if not isinstance(arch, dict):
        raise UserError(f"{what} is not an architecture description (expected a JSON object)")
    for key in ("nodes", "edges", "totals"):
        if key not in arch:
            raise UserError(f"{what} is not an architecture description: it has no '{key}'")
    try:
        index = {str(n["name"]): int(n["index"]) for n in arch["nodes"]}
        shape = {str(n["name"]): tuple(int(s) for s in n.get("shape") or ()) for n in arch["nodes"]}
        edges = []
        for e in arch["edges"]:
            missing = [k for k in _EDGE_KEYS if k not in e]
            if missing:
                raise UserError(f"{what} is not an architecture description: an edge has no '{missing[0]}'")
            if e["src"] not in index or e["dst"] not in index:
                raise UserError(f"{what} is not an architecture description: edge {e['name']!r} joins unknown nodes")
            if e["kind"] not in _KIND_RANK:
                raise UserError(f"{what}: edge {e['name']!r} has unknown kind {e['kind']!r}")
            edges.append(dict(e))
    except (TypeError, KeyError, ValueError) as exc:
        raise UserError(f"{what} is not an architecture description ({type(exc).__name__}: {exc})") from None
    if "input" not in index or "logits" not in index:
        raise UserError(f"{what} is not an architecture description: it needs nodes 'input' and 'logits'")
    edges.sort(key=lambda e: (index[e["dst"]], _KIND_RANK[e["kind"]], -index[e["src"]], str(e["name"])))
    totals = arch["totals"] if isinstance(arch["totals"], dict) else {}
    return Arch(str(arch.get("name") or ""), index, shape, tuple(edges), totals, index["logits"] - 1)


# --------------------------------------------------------------------------------------- rows
def rows(arch: Arch, row_blocks: int | None) -> list[tuple[int, int]]:
    """Rows as (first, last) node index ranges of x_1..x_L; ``row_blocks``: None auto, 0 one row."""
    L = arch.last
    if L <= 0:
        return [(1, max(L, 0))]
    if row_blocks is not None and row_blocks < 0:
        raise UserError(f"--row-blocks (universal blocks per row) must be 0 (no wrapping) or more, not {row_blocks}")
    if row_blocks == 0 or (row_blocks is None and L <= MAX_ROW_BLOCKS):
        return [(1, L)]
    if row_blocks is not None:
        return [(a, min(a + row_blocks - 1, L)) for a in range(1, L + 1, row_blocks)]
    # auto: a stage is a run of universal blocks with the same output shape; pack whole stages
    out_shape = {arch.index[e["dst"]]: tuple(e["out_shape"]) for e in arch.edges if e["kind"] == "universal"}
    stages: list[list[int]] = []
    for l in range(1, L + 1):
        if stages and out_shape.get(l) == out_shape.get(stages[-1][-1]):
            stages[-1].append(l)
        else:
            stages.append([l])
    chunks: list[list[int]] = []
    for st in stages:  # a stage longer than a row is cut into near-equal pieces
        n = math.ceil(len(st) / MAX_ROW_BLOCKS)
        size = math.ceil(len(st) / n)
        chunks += [st[i:i + size] for i in range(0, len(st), size)]
    rows: list[list[int]] = []
    for ch in chunks:
        if rows and len(rows[-1]) + len(ch) <= MAX_ROW_BLOCKS:
            rows[-1] += ch
        else:
            rows.append(list(ch))
    return [(r[0], r[-1]) for r in rows]



# --------------------------------------------------------------------------------------- placement
@dataclass
class Item:
    """One DOT node: its id, its column and its attributes."""

    id: str
    col: int
    attrs: dict[str, str]


@dataclass
class Band:
    """A framed row of one network: its cluster name, its label and its items."""

    name: str
    label: str
    items: list[Item]


@dataclass
class Layout:
    """Bands of items and the edges between them, for one network or several stacked."""

    rows: list[tuple[int, int]]
    show_removed: bool
    compact: bool
    bands: list[Band] = field(default_factory=list)
    edges: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def row_of(self, idx: int) -> int:
        """The row that node index ``idx`` is drawn in."""
        if idx <= 0:
            return 0
        for r, (_, last) in enumerate(self.rows):
            if idx <= last:
                return r
        return len(self.rows) - 1

    def offset(self, r: int) -> int:
        """How many columns row ``r`` is shifted left, so that every row starts in the same column."""
        return 2 * (self.rows[r][0] - 1)

    def add(self, arch: Arch, t: int, band_label: Callable[[int], str]) -> None:
        """Place ``arch`` as network ``t``; ``band_label(row)`` labels its row clusters."""
        placed = _Placement(self, arch, t)
        placed.place()
        self.edges += placed.edges
        self.bands += [Band(f"cluster_t{t}_r{r}", band_label(r), placed.items[r]) for r in range(len(self.rows))]

    def legend_items(self) -> list[Item]:
        entries = [("legend_shared", ("pre-trained,", "shared"), _GREY, "filled"),
                   ("legend_task", ("task-specific",), _GREEN, "filled")]
        if self.show_removed:
            entries.append(("legend_removed", ("removed",), _FADED, "filled,dashed"))
        # in the columns of the first blocks of the first row, which are about as wide as the entries
        return [Item(nid, 3 + 2 * i, {"label": lines(*text), "shape": "box", "style": style, "fontsize": "8",
                                       "width": "0", "height": "0", "margin": "0.06,0.03", **palette})
                for i, (nid, text, palette, style) in enumerate(entries)]


class _Placement:
    """The items and edges of one network in a :class:`Layout`: its nodes, the dashed copies of nodes
    that feed a row from the row before, and its blocks with their edges in and out."""

    def __init__(self, layout: Layout, arch: Arch, t: int) -> None:
        self.layout, self.arch, self.t = layout, arch, t
        self.live_nodes = arch.live_nodes()
        self.items: dict[int, list[Item]] = {r: [] for r in range(len(layout.rows))}
        self.ids: dict[tuple[int, str], str] = {}  # (row, node name) -> DOT id (node or its copy)
        self.edges: list[tuple[str, str, dict[str, str]]] = []
        self.inputs: dict[str, int] = {}  # live blocks into each node
        for e in arch.edges:
            if e["live"]:
                self.inputs[e["dst"]] = self.inputs.get(e["dst"], 0) + 1

    def column(self, idx: int, r: int) -> int:
        """Node ``idx``'s column in row ``r``."""
        return 2 * idx + 2 - self.layout.offset(r)

    def place(self) -> None:
        arch, show = self.arch, self.layout.show_removed
        for name in sorted(arch.index, key=lambda n: (arch.index[n], n)):
            if name in self.live_nodes or show or name in ("input", "logits"):
                self.node(name)
        drawn = [e for e in arch.edges if e["live"] or show]
        for e in drawn:
            self.block(e)
        self.straighten(drawn)

    def node(self, name: str) -> None:
        """A block-boundary tensor: a small circle (``input`` and ``logits``: a box with the shape)."""
        t, idx = self.t, self.arch.index[name]
        r = self.layout.row_of(idx)
        nid = f"t{t}_{name}" if name in ("input", "logits") else f"t{t}_x{idx}"
        self.ids[(r, name)] = nid
        shape = _shape(self.arch.shape.get(name, ()))
        if name in ("input", "logits"):
            attrs = {"label": lines(name, shape), "shape": "box", "style": "rounded", "fontsize": "9",
                     "margin": "0.04,0.02", "width": END_WIDTH, "height": "0"}
        else:
            attrs = {"label": esc(name), "shape": "circle", "fixedsize": "true", "width": "0.32",
                     "fontsize": "8", "group": f"t{t}r{r}", "style": "filled", "fillcolor": "white",
                     "tooltip": esc(f"{name}: {shape}")}
        if name not in self.live_nodes:
            attrs.update(style="dashed", color=_FADED["color"], fontcolor=_FADED["fontcolor"])
        self.items[r].append(Item(nid, self.column(idx, r), attrs))

    def endpoint(self, name: str, r: int) -> str:
        """DOT id of node ``name`` as seen from row ``r``: itself, or a dashed copy at the row's start."""
        if (r, name) in self.ids:
            return self.ids[(r, name)]
        idx = self.arch.index[name]
        gid = f"t{self.t}_r{r}_x{idx}"
        self.items[r].append(Item(gid, max(self.column(idx, r), 2 - 2 * (GHOST_SPAN - 1)), {
            "label": esc(name), "shape": "circle", "fixedsize": "true", "width": "0.32", "fontsize": "8",
            "style": "dashed", "color": "#7f7f7f", "fontcolor": "#7f7f7f",
            "tooltip": esc(f"{name} (from the row above)")}))
        self.ids[(r, name)] = gid
        return gid

    def block(self, e: dict) -> None:
        """A block's box in the block column nearest the middle of its two nodes, with its two edges."""
        s, d = self.arch.index[e["src"]], self.arch.index[e["dst"]]
        r = self.layout.row_of(d)
        src_id = self.endpoint(e["src"], r)
        dst_id = self.ids[(r, e["dst"])]
        src_col = next(it.col for it in self.items[r] if it.id == src_id)
        col = s + d + 2 - self.layout.offset(r)  # halfway between the two nodes
        if col % 2 == 0:
            col += 1  # a block column, not a node column: those stay narrow
        col = min(max(col, src_col + 1), self.column(d, r) - 1)
        kind = e["kind"]
        bid = f"t{self.t}_{kind}" if kind in ("stem", "head") else f"t{self.t}_{kind[0]}{s}_{d}"
        attrs = self.block_attrs(e)
        if kind == "universal":
            attrs["group"] = f"t{self.t}r{r}"
        self.items[r].append(Item(bid, col, attrs))
        chain = kind in ("universal", "stem", "head")
        line = _LINE[kind] if e["live"] else _FADED_LINE
        into = {"color": line, "arrowhead": "none", "weight": "8" if chain else "1"}
        out = {"color": line, "arrowsize": "0.5", "weight": "8" if chain else "1"}
        alpha = e.get("alpha")
        if not e["live"]:
            into["style"] = out["style"] = "dashed"
        elif alpha is not None and kind in ("universal", "proxy"):
            out["penwidth"] = _num(0.6 + 2.4 * float(alpha))
        self.edges.append((src_id, bid, into))
        self.edges.append((bid, dst_id, out))

    def block_attrs(self, e: dict) -> dict[str, str]:
        """A block box's label (name, shape, MACs, gate), tooltip and colours."""
        kind, compact = e["kind"], self.layout.compact
        task_specific = kind in ("proxy", "head")
        palette = _FADED if not e["live"] else (_GREEN if task_specific else _GREY)
        out_shape = _shape(e["out_shape"])
        alpha = e.get("alpha")
        gate = f"α={float(alpha):.2f}" if e["live"] and alpha is not None and self.inputs.get(e["dst"], 0) > 1 else ""
        macs = si(e["macs"]) if compact else f"{si(e['macs'])} MACs"
        if kind == "proxy":
            attrs = {"fontsize": "7", "margin": "0.03,0.01", "label": lines(f"{e['src']}→{e['dst']}", macs, gate)}
        else:
            attrs = {"fontsize": "9", "margin": "0.06,0.03",
                     "label": lines(e["name"], "" if compact else out_shape, macs, gate)}
        tip = (f"{e['name']} ({'task-specific' if task_specific else 'pre-trained, shared'}"
               f"{'' if e['live'] else ', removed'}): {_shape(e.get('in_shape') or ())} → {out_shape}, "
               f"{int(e['macs']):,} MACs, {int(e['params']):,} parameters")
        if alpha is not None:
            tip += f", alpha {float(alpha):.4f}"
        attrs.update(shape="box", width="0", height="0", tooltip=esc(tip),
                     style="filled" if e["live"] else "filled,dashed", **palette)
        return attrs

    def straighten(self, drawn: list[dict]) -> None:
        """Invisible edges that keep the line of nodes straight where a hidden block leaves a gap."""
        pairs = {(e["src"], e["dst"]) for e in drawn if e["kind"] in ("universal", "stem", "head")}
        for e in self.arch.edges:
            if e["kind"] == "universal" and (e["src"], e["dst"]) not in pairs:
                r = self.layout.row_of(self.arch.index[e["dst"]])
                if (r, e["src"]) in self.ids and (r, e["dst"]) in self.ids:
                    self.edges.append((self.ids[(r, e["src"])], self.ids[(r, e["dst"])], {"style": "invis", "weight": "8"}))


def totals_line(arch: Arch) -> str:
    """The title's second line: MACs, parameters and blocks, original → tailored."""
    t = arch.totals
    om, m = t.get("original_macs", 0), t.get("macs", 0)
    op, p = t.get("original_params", 0), t.get("params", 0)
    ts = t.get("task_specific_params", 0)
    universal = [e for e in arch.edges if e["kind"] == "universal"]
    kept = sum(1 for e in universal if e["live"])
    return (f"MACs {si(om)} → {si(m)} ({_pct(m, om)})   ·   parameters {si(op)} → {si(p)} ({_pct(p, op)})   ·   "
            f"task-specific {_pct(ts, p)} of parameters   ·   universal blocks kept {kept} of {len(universal)}")


def span(row: tuple[int, int]) -> str:
    """A row's blocks, as its label says them."""
    return f"block {row[0]}" if row[0] == row[1] else f"blocks {row[0]}–{row[1]}"


def compact(labels: str) -> bool:
    """Whether ``labels`` ('full' or 'compact') leaves shapes out of the boxes."""
    if labels not in ("full", "compact"):
        raise UserError(f"labels must be 'full' or 'compact', not {labels!r}")
    return labels == "compact"
