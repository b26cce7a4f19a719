"""Pictures of tailored architectures, drawn like Figure 4 of the NetTailor paper.

The input is an *architecture dict* (:func:`archsearch.graph.serialize.architecture_dict`): every
node and block of the student, each block with whether it survived the pruning and its gate alpha.

Layout (Graphviz ``dot``, left to right):

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

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import graphviz

from archsearch.errors import UserError

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["to_dot", "stack_dot", "render", "load_architecture", "student_architecture", "FORMATS", "MAX_ROW_BLOCKS"]

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": None, ".gv": None}
MAX_ROW_BLOCKS = 10  # automatic wrapping: at most this many universal blocks per row
GHOST_SPAN = 3  # a row shows at most this many columns of copied nodes from the rows before it

NO_DOT = ("drawing pictures needs the Graphviz 'dot' program, which is not installed: "
          "install it (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz) "
          "or write a .dot file, which works without it")

_FONT = "Helvetica"
_GREY = {"fillcolor": "#d9d9d9", "color": "#595959", "fontcolor": "#000000"}
_GREEN = {"fillcolor": "#b7e1a1", "color": "#2e7d32", "fontcolor": "#000000"}
_FADED = {"fillcolor": "#f7f7f7", "color": "#bdbdbd", "fontcolor": "#9e9e9e"}
_LINE = {"universal": "#595959", "stem": "#595959", "head": "#2e7d32", "proxy": "#2e7d32"}
_FADED_LINE = "#c8c8c8"
_END_WIDTH = "0.8"  # least width of input and logits, and of the invisible ends of every band: frames line up
_LEGEND = ("grey: pre-trained blocks that every task shares (stem, universal blocks)\\l"
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


def _esc(text: str) -> str:
    """A user string as literal DOT text (backslashes are not escape sequences)."""
    return graphviz.escape(str(text))


def _lines(*parts: str) -> str:
    return "\\n".join(_esc(p) for p in parts if p)


def _num(v: float) -> str:
    return f"{v:.2f}"


# --------------------------------------------------------------------------------------- the input
@dataclass(frozen=True)
class _Arch:
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


def _parse(arch: Any, what: str = "architecture") -> _Arch:
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
    return _Arch(str(arch.get("name") or ""), index, shape, tuple(edges), totals, index["logits"] - 1)


# --------------------------------------------------------------------------------------- rows
def _rows(arch: _Arch, row_blocks: int | None) -> list[tuple[int, int]]:
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


# --------------------------------------------------------------------------------------- drawing
@dataclass
class _Item:
    id: str
    col: int
    attrs: dict[str, str]


class _Drawing:
    """Collects nodes per band (task, row) with their columns, then writes one Digraph."""

    def __init__(self, rows: list[tuple[int, int]], show_removed: bool, compact: bool):
        self.rows = rows
        self.show_removed = show_removed
        self.compact = compact
        self.bands: list[tuple[str, str, list[_Item]]] = []  # (cluster name, label, items)
        self.edges: list[tuple[str, str, dict[str, str]]] = []

    # -- positions ------------------------------------------------------------------------
    def row_of(self, idx: int) -> int:
        if idx <= 0:
            return 0
        for r, (_, last) in enumerate(self.rows):
            if idx <= last:
                return r
        return len(self.rows) - 1

    def offset(self, r: int) -> int:
        return 2 * (self.rows[r][0] - 1)

    # -- one network ------------------------------------------------------------------------
    def add(self, arch: _Arch, t: int, band_label: Any) -> None:
        """Draw ``arch`` as task ``t``; ``band_label(row) -> str`` labels its row clusters."""
        show = self.show_removed
        drawn_edges = [e for e in arch.edges if e["live"] or show]
        live_nodes = arch.live_nodes()
        items: dict[int, list[_Item]] = {r: [] for r in range(len(self.rows))}
        ids: dict[tuple[int, str], str] = {}  # (row, node name) -> DOT id (node or its copy)
        inputs: dict[str, int] = {}
        for e in arch.edges:
            if e["live"]:
                inputs[e["dst"]] = inputs.get(e["dst"], 0) + 1

        def node(name: str) -> None:
            idx = arch.index[name]
            r = self.row_of(idx)
            nid = f"t{t}_{name}" if name in ("input", "logits") else f"t{t}_x{idx}"
            ids[(r, name)] = nid
            faded = name not in live_nodes
            shape = _shape(arch.shape.get(name, ()))
            if name in ("input", "logits"):
                attrs = {"label": _lines(name, shape), "shape": "box", "style": "rounded", "fontsize": "9",
                         "margin": "0.04,0.02", "width": _END_WIDTH, "height": "0"}
            else:
                attrs = {"label": _esc(name), "shape": "circle", "fixedsize": "true", "width": "0.32",
                         "fontsize": "8", "group": f"t{t}r{r}", "style": "filled", "fillcolor": "white",
                         "tooltip": _esc(f"{name}: {shape}")}
            if faded:
                attrs.update(style="dashed", color=_FADED["color"], fontcolor=_FADED["fontcolor"])
            items[r].append(_Item(nid, 2 * idx + 2 - self.offset(r), attrs))

        for name in sorted(arch.index, key=lambda n: (arch.index[n], n)):
            if name in live_nodes or show or name in ("input", "logits"):
                node(name)

        def endpoint(name: str, r: int) -> str:
            """DOT id of node ``name`` as seen from row ``r``: itself, or a dashed copy at the row's start."""
            if (r, name) in ids:
                return ids[(r, name)]
            idx = arch.index[name]
            col = max(2 * idx + 2 - self.offset(r), 2 - 2 * (GHOST_SPAN - 1))
            gid = f"t{t}_r{r}_x{idx}"
            items[r].append(_Item(gid, col, {
                "label": _esc(name), "shape": "circle", "fixedsize": "true", "width": "0.32", "fontsize": "8",
                "style": "dashed", "color": "#7f7f7f", "fontcolor": "#7f7f7f",
                "tooltip": _esc(f"{name} (from the row above)")}))
            ids[(r, name)] = gid
            return gid

        for e in drawn_edges:
            s, d = arch.index[e["src"]], arch.index[e["dst"]]
            r = self.row_of(d)
            src_id = endpoint(e["src"], r)
            dst_id = ids[(r, e["dst"])]
            src_col = next(it.col for it in items[r] if it.id == src_id)
            dst_col = 2 * d + 2 - self.offset(r)
            col = s + d + 2 - self.offset(r)  # halfway between the two nodes
            if col % 2 == 0:
                col += 1  # a block column, not a node column: those stay narrow
            col = min(max(col, src_col + 1), dst_col - 1)
            kind = e["kind"]
            bid = f"t{t}_{kind}" if kind in ("stem", "head") else f"t{t}_{kind[0]}{s}_{d}"
            task_specific = kind in ("proxy", "head")
            palette = _FADED if not e["live"] else (_GREEN if task_specific else _GREY)
            out_shape = _shape(e["out_shape"])
            alpha = e.get("alpha")
            gate = (f"α={float(alpha):.2f}" if e["live"] and alpha is not None and inputs.get(e["dst"], 0) > 1
                    else "")
            macs = si(e["macs"]) if self.compact else f"{si(e['macs'])} MACs"
            if kind == "proxy":
                label = _lines(f"{e['src']}→{e['dst']}", macs, gate)
                attrs = {"fontsize": "7", "margin": "0.03,0.01"}
            else:
                label = _lines(e["name"], "" if self.compact else out_shape, macs, gate)
                attrs = {"fontsize": "9", "margin": "0.06,0.03"}
                if kind == "universal":
                    attrs["group"] = f"t{t}r{r}"
            tip = (f"{e['name']} ({'task-specific' if task_specific else 'pre-trained, shared'}"
                   f"{'' if e['live'] else ', removed'}): {_shape(e.get('in_shape') or ())} → {out_shape}, "
                   f"{int(e['macs']):,} MACs, {int(e['params']):,} parameters")
            if alpha is not None:
                tip += f", alpha {float(alpha):.4f}"
            attrs.update(label=label, shape="box", width="0", height="0", tooltip=_esc(tip),
                         style="filled" if e["live"] else "filled,dashed", **palette)
            items[r].append(_Item(bid, col, attrs))
            chain = kind in ("universal", "stem", "head")
            line = _LINE[kind] if e["live"] else _FADED_LINE
            into = {"color": line, "arrowhead": "none", "weight": "8" if chain else "1"}
            out = {"color": line, "arrowsize": "0.5", "weight": "8" if chain else "1"}
            if not e["live"]:
                into["style"] = out["style"] = "dashed"
            elif alpha is not None and kind in ("universal", "proxy"):
                out["penwidth"] = _num(0.6 + 2.4 * float(alpha))
            self.edges.append((src_id, bid, into))
            self.edges.append((bid, dst_id, out))

        # keep the line of nodes straight where a hidden block leaves a gap
        drawn_pairs = {(e["src"], e["dst"]) for e in drawn_edges if e["kind"] in ("universal", "stem", "head")}
        for e in arch.edges:
            if e["kind"] == "universal" and (e["src"], e["dst"]) not in drawn_pairs:
                r = self.row_of(arch.index[e["dst"]])
                if (r, e["src"]) in ids and (r, e["dst"]) in ids:
                    self.edges.append((ids[(r, e["src"])], ids[(r, e["dst"])], {"style": "invis", "weight": "8"}))

        for r in range(len(self.rows)):
            self.bands.append((f"cluster_t{t}_r{r}", band_label(r), items[r]))

    # -- the whole picture ----------------------------------------------------------------------
    def digraph(self, title: str, frame_single: bool = False) -> graphviz.Digraph:
        g = graphviz.Digraph("architecture")
        g.attr(rankdir="LR", newrank="true", nodesep="0.12", ranksep="0.15", splines="spline", fontname=_FONT,
               label=title, labelloc="t", fontsize="13", pad="0.2", outputorder="edgesfirst")
        g.attr("node", fontname=_FONT)
        g.attr("edge", fontname=_FONT, arrowsize="0.5")
        bands = list(self.bands) + [("cluster_legend", "", self._legend_items())]
        cols = [it.col for _, _, items in bands for it in items]
        shift = -min(cols)
        max_col = max(cols) + shift
        columns: dict[int, list[str]] = {c: [] for c in range(max_col + 1)}
        single = len(self.bands) == 1 and not frame_single
        # In a left-to-right layout dot stacks clusters that nothing orders in the reverse order of
        # their declaration: declare the legend first and the first band last, so it ends up on top.
        for cname, label, items in reversed(bands):
            with g.subgraph(name=cname) as c:
                if cname == "cluster_legend":
                    c.attr(label=_LEGEND, fontsize="8", style="rounded", color="#d0d0d0", labeljust="l")
                elif single:
                    c.attr(label="", peripheries="0")
                else:
                    c.attr(label=label, fontsize="10", style="rounded", color="#bdbdbd", labeljust="l")
                # every band spans every column, so no cluster border falls between two columns
                for end, col in (("start", 0), ("end", max_col)):
                    nid = f"{cname[len('cluster_'):]}_{end}"
                    c.node(nid, label="", shape="box", style="invis", width=_END_WIDTH, height="0.02",
                           fixedsize="true")
                    columns[col].append(nid)
                for it in items:
                    c.node(it.id, **it.attrs)
                    columns[it.col + shift].append(it.id)
        for a, b, attrs in self.edges:
            g.edge(a, b, **attrs)
        # one rank per column, in order, shared by every band: blocks line up across rows and networks
        for c in range(max_col + 1):
            g.node(f"col{c}", label="", shape="point", style="invis", width="0", height="0")
            if c:
                g.edge(f"col{c - 1}", f"col{c}", style="invis")
        for c in range(max_col + 1):
            with g.subgraph() as s:
                s.attr(rank="same")
                for nid in [f"col{c}"] + columns[c]:
                    s.node(nid)
        return g

    def _legend_items(self) -> list[_Item]:
        entries = [("legend_shared", ("pre-trained,", "shared"), _GREY, "filled"),
                   ("legend_task", ("task-specific",), _GREEN, "filled")]
        if self.show_removed:
            entries.append(("legend_removed", ("removed",), _FADED, "filled,dashed"))
        # in the columns of the first blocks of the first row, which are about as wide as the entries
        return [_Item(nid, 3 + 2 * i, {"label": _lines(*text), "shape": "box", "style": style, "fontsize": "8",
                                       "width": "0", "height": "0", "margin": "0.06,0.03", **palette})
                for i, (nid, text, palette, style) in enumerate(entries)]


def _totals_line(arch: _Arch) -> str:
    t = arch.totals
    om, m = t.get("original_macs", 0), t.get("macs", 0)
    op, p = t.get("original_params", 0), t.get("params", 0)
    ts = t.get("task_specific_params", 0)
    universal = [e for e in arch.edges if e["kind"] == "universal"]
    kept = sum(1 for e in universal if e["live"])
    return (f"MACs {si(om)} → {si(m)} ({_pct(m, om)})   ·   parameters {si(op)} → {si(p)} ({_pct(p, op)})   ·   "
            f"task-specific {_pct(ts, p)} of parameters   ·   universal blocks kept {kept} of {len(universal)}")


def _span(row: tuple[int, int]) -> str:
    return f"block {row[0]}" if row[0] == row[1] else f"blocks {row[0]}–{row[1]}"


def _compact(labels: str) -> bool:
    if labels not in ("full", "compact"):
        raise UserError(f"labels must be 'full' or 'compact', not {labels!r}")
    return labels == "compact"


def to_dot(arch: dict, *, show_removed: bool = False, row_blocks: int | None = None,
           labels: str = "full") -> graphviz.Digraph:
    """The picture of one tailored network (Figure 4 of the paper) as a Graphviz Digraph.

    ``show_removed`` draws removed blocks faded and dashed instead of hiding them. ``row_blocks``
    wraps the network into rows of that many universal blocks (None: whole stages, at most
    :data:`MAX_ROW_BLOCKS` blocks a row; 0: one row). ``labels='compact'`` leaves shapes out.
    """
    a = _parse(arch)
    drawing = _Drawing(_rows(a, row_blocks), show_removed, _compact(labels))
    rows = drawing.rows
    drawing.add(a, 0, lambda r: _esc(_span(rows[r])) + "\\l" if len(rows) > 1 else "")
    title = _lines(a.name or "tailored network", _totals_line(a))
    return drawing.digraph(title)


def stack_dot(archs: list[dict], *, show_removed: bool = False, row_blocks: int | None = None,
              labels: str = "full", title: str | None = None) -> graphviz.Digraph:
    """Several tailored networks of one backbone, one framed row per network, block by block.

    The same universal block sits in the same column in every row, so what each task kept is visible
    at a glance. Raises :class:`UserError` when the networks do not share a backbone.
    """
    if not archs:
        raise UserError("nothing to draw: give at least one architecture")
    parsed = [_parse(a, f"architecture {i + 1}") for i, a in enumerate(archs)]
    ref = parsed[0]
    for i, p in enumerate(parsed[1:], start=2):
        if p.universal() != ref.universal() or p.last != ref.last:
            raise UserError(f"cannot stack {ref.name or 'architecture 1'!r} and {p.name or f'architecture {i}'!r}: "
                            "they come from different backbones (their universal blocks differ)")
    drawing = _Drawing(_rows(ref, row_blocks), show_removed, _compact(labels))
    rows = drawing.rows
    for t, p in enumerate(parsed):
        head = [p.name or f"network {t + 1}", _totals_line(p)]

        def band_label(r: int, head: list[str] = head) -> str:
            lines = (head if r == 0 else []) + ([_span(rows[r])] if len(rows) > 1 else [])
            return "".join(_esc(line) + "\\l" for line in lines)  # \l: a left-justified line

        drawing.add(p, t, band_label)
    if title is None:
        prefixes = {p.name.split(" → ")[0] for p in parsed if " → " in p.name}
        title = (f"{prefixes.pop()} tailored to {len(parsed)} tasks" if len(prefixes) == 1 and
                 all(" → " in p.name for p in parsed) else f"{len(parsed)} tailored networks")
    return drawing.digraph(_esc(title), frame_single=True)


# --------------------------------------------------------------------------------------- output
def render(dot: graphviz.Digraph, path: str | Path) -> Path:
    """Write ``dot`` to ``path`` atomically; the extension picks the format (none: ``.svg``); a folder
    (one that exists, or a path ending in a slash) gets ``architecture.svg`` inside it.

    ``.dot``/``.gv`` write the DOT source and need no Graphviz install; ``.svg``, ``.png`` and
    ``.pdf`` run the ``dot`` program. Returns the path written.
    """
    from archsearch.io.atomic import atomic_write_bytes, atomic_write_text

    folder = str(path).endswith(("/", os.sep))
    path = Path(path)
    if folder or path.is_dir():
        path = path / "architecture.svg"
    elif not path.suffix:
        path = path.with_name(path.name + ".svg")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UserError(f"cannot draw {path.name}: unknown picture format {path.suffix!r}; "
                        f"use one of {', '.join(sorted(FORMATS))}")
    fmt = FORMATS[suffix]
    if fmt is None:
        atomic_write_text(path, dot.source)
        return path
    if shutil.which("dot") is None:
        raise UserError(NO_DOT)
    try:
        data = dot.pipe(format=fmt, quiet=True)
    except graphviz.ExecutableNotFound:
        raise UserError(NO_DOT) from None
    except graphviz.CalledProcessError as exc:
        err = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise UserError(f"Graphviz could not draw {path.name}: {err[-1] if err else exc}") from None
    atomic_write_bytes(path, data)
    return path


def student_architecture(model: nn.Module, input_shape: Iterable[int], leaf_modules: Iterable[str | type],
                         skips: int | str, name: str) -> dict:
    """The architecture dict of ``model``'s untrained student: every candidate proxy, gates at their
    initial values (what ``archsearch render --backbone/--model`` draws)."""
    from archsearch.graph.serialize import architecture_dict
    from archsearch.graph.trace import trace
    from archsearch.passes.insert_proxies import insert_proxies

    return architecture_dict(insert_proxies(trace(model, tuple(input_shape), tuple(leaf_modules)), skips), None, name)


def load_architecture(target: str | Path) -> dict:
    """The architecture dict of a run directory, an ``architecture.json`` file or a tailored ``.pt`` module."""
    p = Path(target)
    hint = "give a run directory, its architecture.json or a tailored .pt module"
    if not p.exists():
        raise UserError(f"{p}: no such file or directory; {hint}")
    if p.is_dir():
        f = p / "architecture.json"
        if not f.is_file():
            raise UserError(f"{p} has no architecture.json: it is not a run directory of archsearch tailor; {hint}")
        p = f
    if p.suffix.lower() in (".pt", ".pth"):
        arch = _from_module(p)
    else:
        try:
            arch = json.loads(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"{p} is not a JSON file; {hint}") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"{p} is not valid JSON (line {exc.lineno}: {exc.msg}); {hint}") from None
        except OSError as exc:
            raise UserError(f"cannot read {p}: {exc.strerror or exc}") from None
    _parse(arch, str(p))
    return arch


def _from_module(p: Path) -> dict:
    import torch

    from archsearch.graph.serialize import ARCHITECTURE_ATTR

    try:
        obj = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling runs arbitrary code paths; every failure means "not readable"
        raise UserError(f"cannot load {p} as a torch module ({type(exc).__name__}: {exc})") from None
    text = getattr(obj, ARCHITECTURE_ATTR, None)
    if not isinstance(text, str):
        raise UserError(f"{p} carries no architecture description (attribute '{ARCHITECTURE_ATTR}'): "
                        "render its run directory or architecture.json instead")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{p}: its architecture description is not valid JSON ({exc.msg})") from None
