"""Drawing: a :class:`~archsearch.render.layout.Layout` as a Graphviz graph, and the file.

:func:`to_dot` draws one tailored network (Figure 4 of the NetTailor paper), :func:`stack_dot`
several of one backbone block by block, and :func:`render` writes DOT text or runs Graphviz ``dot``
for SVG, PNG or PDF. Where things go is :mod:`archsearch.render.layout`'s job; the DOT text depends on
nothing but the architecture dict, so the same architecture always gives the same bytes.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import graphviz

from archsearch.errors import UserError
from archsearch.render.layout import (END_WIDTH, LEGEND, MAX_ROW_BLOCKS, Layout, compact, esc, lines, parse, rows,
                                      si, span, totals_line)
from archsearch.render.load import load_architecture, student_architecture

__all__ = ["to_dot", "stack_dot", "render", "load_architecture", "student_architecture", "si", "FORMATS",
           "MAX_ROW_BLOCKS"]

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": None, ".gv": None}

NO_DOT = ("drawing pictures needs the Graphviz 'dot' program, which is not installed: "
          "install it (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz) "
          "or write a .dot file, which works without it")

_FONT = "Helvetica"


def digraph(layout: Layout, title: str, frame_single: bool = False) -> graphviz.Digraph:
    """The Graphviz graph of ``layout``: its bands as clusters and one rank per column, shared by every band."""
    g = graphviz.Digraph("architecture")
    g.attr(rankdir="LR", newrank="true", nodesep="0.12", ranksep="0.15", splines="spline", fontname=_FONT,
           label=title, labelloc="t", fontsize="13", pad="0.2", outputorder="edgesfirst")
    g.attr("node", fontname=_FONT)
    g.attr("edge", fontname=_FONT, arrowsize="0.5")
    bands = [(b.name, b.label, b.items) for b in layout.bands] + [("cluster_legend", "", layout.legend_items())]
    cols = [it.col for _, _, items in bands for it in items]
    shift = -min(cols)
    max_col = max(cols) + shift
    columns: dict[int, list[str]] = {c: [] for c in range(max_col + 1)}
    single = len(layout.bands) == 1 and not frame_single
    # In a left-to-right layout dot stacks clusters that nothing orders in the reverse order of
    # their declaration: declare the legend first and the first band last, so it ends up on top.
    for cname, label, items in reversed(bands):
        with g.subgraph(name=cname) as c:
            if cname == "cluster_legend":
                c.attr(label=LEGEND, fontsize="8", style="rounded", color="#d0d0d0", labeljust="l")
            elif single:
                c.attr(label="", peripheries="0")
            else:
                c.attr(label=label, fontsize="10", style="rounded", color="#bdbdbd", labeljust="l")
            # every band spans every column, so no cluster border falls between two columns
            for end, col in (("start", 0), ("end", max_col)):
                nid = f"{cname[len('cluster_'):]}_{end}"
                c.node(nid, label="", shape="box", style="invis", width=END_WIDTH, height="0.02",
                       fixedsize="true")
                columns[col].append(nid)
            for it in items:
                c.node(it.id, **it.attrs)
                columns[it.col + shift].append(it.id)
    for a, b, attrs in layout.edges:
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


def to_dot(arch: dict, *, show_removed: bool = False, row_blocks: int | None = None,
           labels: str = "full") -> graphviz.Digraph:
    """The picture of one tailored network (Figure 4 of the paper) as a Graphviz Digraph.

    ``show_removed`` draws removed blocks faded and dashed instead of hiding them. ``row_blocks``
    wraps the network into rows of that many universal blocks (None: whole stages, at most
    :data:`MAX_ROW_BLOCKS` blocks a row; 0: one row). ``labels='compact'`` leaves shapes out.
    """
    a = parse(arch)
    layout = Layout(rows(a, row_blocks), show_removed, compact(labels))
    spans = layout.rows
    layout.add(a, 0, lambda r: esc(span(spans[r])) + "\\l" if len(spans) > 1 else "")
    title = lines(a.name or "tailored network", totals_line(a))
    return digraph(layout, title)


def stack_dot(archs: list[dict], *, show_removed: bool = False, row_blocks: int | None = None,
              labels: str = "full", title: str | None = None) -> graphviz.Digraph:
    """Several tailored networks of one backbone, one framed row per network, block by block.

    The same universal block sits in the same column in every row, so what each task kept is visible
    at a glance. Raises :class:`UserError` when the networks do not share a backbone.
    """
    if not archs:
        raise UserError("nothing to draw: give at least one architecture")
    parsed = [parse(a, f"architecture {i + 1}") for i, a in enumerate(archs)]
    ref = parsed[0]
    for i, p in enumerate(parsed[1:], start=2):
        if p.universal() != ref.universal() or p.last != ref.last:
            raise UserError(f"cannot stack {ref.name or 'architecture 1'!r} and {p.name or f'architecture {i}'!r}: "
                            "they come from different backbones (their universal blocks differ)")
    layout = Layout(rows(ref, row_blocks), show_removed, compact(labels))
    spans = layout.rows
    for t, p in enumerate(parsed):
        head = [p.name or f"network {t + 1}", totals_line(p)]

        def band_label(r: int, head: list[str] = head) -> str:
            lines = (head if r == 0 else []) + ([span(spans[r])] if len(spans) > 1 else [])
            return "".join(esc(line) + "\\l" for line in lines)  # \l: a left-justified line

        layout.add(p, t, band_label)
    if title is None:
        prefixes = {p.name.split(" → ")[0] for p in parsed if " → " in p.name}
        title = (f"{prefixes.pop()} tailored to {len(parsed)} tasks" if len(prefixes) == 1 and
                 all(" → " in p.name for p in parsed) else f"{len(parsed)} tailored networks")
    return digraph(layout, esc(title), frame_single=True)


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
