"""Pictures of architectures: golden DOT text, determinism, well-formed SVG, errors a user can meet.

Golden files live in tests/golden/. After an intended change to the drawing (or to what the
architecture dict holds), regenerate them and look at the difference:

    ARCHSEARCH_REGEN_GOLDEN=1 python -m pytest tests/test_render.py
"""
from __future__ import annotations

import json
import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import graphviz
import pytest
import torch

import backbones
from archsearch.render import draw as render_mod
from archsearch.errors import UserError
from archsearch.graph.serialize import ARCHITECTURE_ATTR, architecture_dict
from archsearch.graph.trace import trace
from archsearch.passes.codegen import build_slim, build_student, gate_target, read_gates
from archsearch.passes.insert_proxies import insert_proxies
from archsearch.passes.prune import prune
from archsearch.render.draw import load_architecture, render, si, stack_dot, to_dot

GOLDEN = Path(__file__).resolve().parent / "golden"
REGEN = os.environ.get("ARCHSEARCH_REGEN_GOLDEN") == "1"
HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="Graphviz 'dot' is not installed")
SVG = "{http://www.w3.org/2000/svg}"


# ------------------------------------------------------------------------------ architectures
def _hand_gates(bg, weak: set[int], strong: set[tuple[int, int]]):
    """A 'trained' student: universal gates low on ``weak`` blocks, proxies in ``strong`` high."""
    state = {k: v.clone() for k, v in build_student(bg).state_dict().items() if k.startswith("gates.")}
    for node in bg.block_nodes():
        edges = bg.in_edges(node)
        if len(edges) < 2:
            continue
        logits = state[gate_target(node)]
        for i, e in enumerate(edges):
            s, d = bg.node(e[0])["index"], bg.node(e[1])["index"]
            if e[2] == "universal":
                logits[i] = -1.0 if d in weak else 2.0 + 0.25 * (d % 3)
            else:
                logits[i] = 1.0 + 0.5 * (s % 2) if (s, d) in strong else -2.0 - 0.5 * (d - s)
    return read_gates(bg, state)


@pytest.fixture(scope="module")
def archs() -> dict:
    bg = insert_proxies(trace(backbones.get_backbone("resnet20"), (3, 32, 32)), 3)
    trained = _hand_gates(bg, weak={3, 5, 8}, strong={(2, 3), (4, 5), (7, 8), (1, 4)})
    small = _hand_gates(bg, weak={2, 3, 5, 6, 8, 9}, strong={(1, 3), (4, 6), (7, 9), (0, 1), (3, 4)})
    tailored = prune(trained, k=3)
    slim = build_slim(tailored)
    return {
        "student": architecture_dict(trained, None, "resnet20 student"),
        "tailored": architecture_dict(trained, tailored, "resnet20 → mnist"),
        "small": architecture_dict(small, prune(small, k=6), "resnet20 → digits"),
        "slim": slim,
    }


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if REGEN or not path.exists():
        if not REGEN:
            pytest.fail(f"{path} is missing: run with ARCHSEARCH_REGEN_GOLDEN=1 to create it")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), (
        f"DOT text differs from {path}; if the change is intended, rerun with ARCHSEARCH_REGEN_GOLDEN=1")


def _live(arch: dict) -> tuple[int, int]:
    """(live blocks, live nodes with input and logits) of an architecture dict."""
    live = [e for e in arch["edges"] if e["live"]]
    nodes = {"input", "logits"} | {e["src"] for e in live} | {e["dst"] for e in live}
    return len(live), len(nodes)


def _svg(dot: graphviz.Digraph, tmp_path: Path, name: str = "a.svg") -> ET.Element:
    path = render(dot, tmp_path / name)
    return ET.parse(path).getroot()  # raises on malformed XML


def _groups(root: ET.Element, cls: str) -> dict[str, ET.Element]:
    return {g.find(f"{SVG}title").text: g for g in root.iter(f"{SVG}g") if g.get("class") == cls}


# ------------------------------------------------------------------------------ golden DOT text
@pytest.mark.parametrize("case", ["student", "tailored", "small_removed_rows", "stack"])
def test_dot_matches_golden(archs, case):
    dot = {"student": lambda: to_dot(archs["student"]),
           "tailored": lambda: to_dot(archs["tailored"]),
           "small_removed_rows": lambda: to_dot(archs["small"], show_removed=True, row_blocks=3),
           "stack": lambda: stack_dot([archs["tailored"], archs["small"]])}[case]()
    _golden(f"resnet20_{case}.dot", dot.source)


def test_dot_is_deterministic(archs):
    for arch in (archs["student"], archs["small"]):
        a = to_dot(json.loads(json.dumps(arch)), show_removed=True).source.encode()
        # a reordered but equal dict draws the same bytes
        shuffled = dict(arch, nodes=list(reversed(arch["nodes"])), edges=list(reversed(arch["edges"])))
        b = to_dot(shuffled, show_removed=True).source.encode()
        assert a == b


def test_labels_and_title(archs):
    src = to_dot(archs["tailored"]).source
    assert "layer1.0\\n16x32x32\\n4.72M MACs" in src
    assert "rankdir=LR" in src
    title = re.search(r'label="(resnet20 → mnist[^"]*)"', src).group(1)
    t = archs["tailored"]["totals"]
    assert f"MACs {si(t['original_macs'])} → {si(t['macs'])}" in title
    assert f"parameters {si(t['original_params'])} → {si(t['params'])}" in title
    assert "task-specific" in title
    # a node that sums two live blocks shows both gates; a block alone on its node shows none
    gated = [e for e in archs["tailored"]["edges"] if e["live"] and e["alpha"] is not None and e["alpha"] < 0.999]
    assert gated
    for e in gated:
        assert f"α={e['alpha']:.2f}" in src
    assert src.count("α=") == len(gated)
    compact = to_dot(archs["tailored"], labels="compact").source
    assert "layer1.0\\n4.72M" in compact and "16x32x32\\n4.72M" not in compact


def test_layout_places_blocks_between_their_nodes_without_graphviz(archs):
    from archsearch.render.layout import Layout, parse, rows

    arch = parse(archs["tailored"])
    layout = Layout(rows(arch, 0), show_removed=False, compact=False)
    layout.add(arch, 0, lambda r: "")
    (band,) = layout.bands
    col = {it.id: it.col for it in band.items}
    live = [e for e in arch.edges if e["live"]]
    assert len(band.items) == len(arch.live_nodes()) + len(live)  # removed blocks are hidden
    for e in live:  # every box sits strictly between its two nodes, in an odd (block) column
        s, d = arch.index[e["src"]], arch.index[e["dst"]]
        box = f"t0_{e['kind']}" if e["kind"] in ("stem", "head") else f"t0_{e['kind'][0]}{s}_{d}"
        src = "t0_input" if e["src"] == "input" else f"t0_x{s}"
        dst = "t0_logits" if e["dst"] == "logits" else f"t0_x{d}"
        assert col[src] < col[box] < col[dst] and col[box] % 2 == 1
        assert (src, box) in {(a, b) for a, b, _ in layout.edges} and (box, dst) in {(a, b) for a, b, _ in layout.edges}
    shown = Layout(rows(arch, 0), show_removed=True, compact=False)
    shown.add(arch, 0, lambda r: "")
    assert len(shown.bands[0].items) == len(arch.index) + len(arch.edges)


def test_si_format():
    assert [si(v) for v in (0, 640, 999, 1000, 262144, 4718592, 999_600, 40_551_040, 4_089_184_256)] == \
        ["0", "640", "999", "1k", "262k", "4.72M", "1M", "40.6M", "4.09G"]


def test_wrapping_rows(archs):
    default = to_dot(archs["student"]).source
    assert "cluster_t0_r1" not in default  # 9 blocks fit one row
    wrapped = to_dot(archs["student"], row_blocks=4).source
    assert "cluster_t0_r2" in wrapped and "block 9\\l" in wrapped
    # a row after the first starts from dashed copies of the nodes that feed it
    assert re.search(r"t0_r1_x4 \[label=x4 .*style=dashed", wrapped)
    with pytest.raises(UserError):
        to_dot(archs["student"], row_blocks=-1)
    with pytest.raises(UserError):
        to_dot(archs["student"], labels="tiny")


def test_stack_refuses_different_backbones(archs):
    other = json.loads(json.dumps(archs["small"]))
    other["edges"] = [dict(e, name="other." + e["name"]) if e["kind"] == "universal" else e for e in other["edges"]]
    with pytest.raises(UserError, match="different backbones"):
        stack_dot([archs["tailored"], other])
    with pytest.raises(UserError):
        stack_dot([])


def test_not_an_architecture():
    for bad in ([], {"nodes": []}, {"nodes": [], "edges": [{"src": "a"}], "totals": {}}):
        with pytest.raises(UserError, match="architecture"):
            to_dot(bad)


# ------------------------------------------------------------------------------ SVG
@needs_dot
def test_svg_draws_one_group_per_live_block_and_node(archs, tmp_path):
    for key in ("student", "tailored", "small"):
        root = _svg(to_dot(archs[key]), tmp_path, f"{key}.svg")
        blocks, nodes = _live(archs[key])
        assert len(_groups(root, "node")) == blocks + nodes + 2  # + the legend's two colours


@needs_dot
def test_show_removed_draws_more(archs, tmp_path):
    arch = archs["small"]
    hidden = _groups(_svg(to_dot(arch), tmp_path, "h.svg"), "node")
    shown = _groups(_svg(to_dot(arch, show_removed=True), tmp_path, "s.svg"), "node")
    assert set(hidden) < set(shown)
    assert len(shown) == len(arch["edges"]) + len(arch["nodes"]) + 3  # + shared, task-specific, removed


@needs_dot
def test_rows_read_top_to_bottom_and_stacks_align(archs, tmp_path):
    def text_pos(root, text):
        return [(float(t.get("x")), float(t.get("y"))) for t in root.iter(f"{SVG}text") if t.text == text]

    root = _svg(to_dot(archs["student"], row_blocks=3), tmp_path, "rows.svg")
    ys = [text_pos(root, f"blocks {a}–{a + 2}")[0][1] for a in (1, 4, 7)]
    assert ys == sorted(ys)  # SVG y grows downwards: the first row is on top
    root = _svg(stack_dot([archs["tailored"], archs["small"]]), tmp_path, "stack.svg")
    nodes = _groups(root, "node")
    kept_by_both = [f"u{s}_{s + 1}" for s in range(9) if f"t0_u{s}_{s + 1}" in nodes and f"t1_u{s}_{s + 1}" in nodes]
    assert kept_by_both
    for b in kept_by_both + ["x0", "x9", "head"]:
        xa = float(nodes[f"t0_{b}"].find(f".//{SVG}text").get("x"))
        xb = float(nodes[f"t1_{b}"].find(f".//{SVG}text").get("x"))
        assert abs(xa - xb) < 0.5, b  # the same block in the same column
        ya = float(nodes[f"t0_{b}"].find(f".//{SVG}text").get("y"))
        yb = float(nodes[f"t1_{b}"].find(f".//{SVG}text").get("y"))
        assert ya < yb  # the first network on top


# ------------------------------------------------------------------------------ output files
def test_dot_output_needs_no_graphviz(archs, tmp_path, monkeypatch):
    monkeypatch.setattr(render_mod.shutil, "which", lambda name: None)
    out = render(to_dot(archs["tailored"]), tmp_path / "sub" / "arch.dot")
    assert out == tmp_path / "sub" / "arch.dot"
    assert out.read_text(encoding="utf-8") == to_dot(archs["tailored"]).source
    assert [p.name for p in out.parent.iterdir()] == ["arch.dot"]  # no temporary file left


def test_missing_dot_is_a_user_error(archs, tmp_path, monkeypatch):
    dot = to_dot(archs["tailored"])
    monkeypatch.setattr(render_mod.shutil, "which", lambda name: None)
    with pytest.raises(UserError) as err:
        render(dot, tmp_path / "a.svg")
    msg = str(err.value)
    assert "apt-get install graphviz" in msg and ".dot" in msg and "\n" not in msg
    monkeypatch.setattr(render_mod.shutil, "which", lambda name: "/usr/bin/dot")

    def missing(*args, **kwargs):
        raise graphviz.ExecutableNotFound(["dot"])

    monkeypatch.setattr(graphviz.Digraph, "pipe", missing)
    with pytest.raises(UserError, match="apt-get install graphviz"):
        render(dot, tmp_path / "a.png")
    assert not list(tmp_path.iterdir())


@needs_dot
def test_formats_from_extension(archs, tmp_path):
    dot = to_dot(archs["tailored"])
    assert render(dot, tmp_path / "noext") == tmp_path / "noext.svg"
    assert (tmp_path / "noext.svg").read_bytes().lstrip().startswith(b"<?xml")
    assert render(dot, tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert render(dot, tmp_path / "a.pdf").read_bytes()[:5] == b"%PDF-"
    with pytest.raises(UserError, match="unknown picture format"):
        render(dot, tmp_path / "a.jpeg")


@needs_dot
def test_a_folder_gets_architecture_svg_inside(archs, tmp_path):
    dot = to_dot(archs["tailored"])
    (tmp_path / "out").mkdir()
    assert render(dot, tmp_path / "out") == tmp_path / "out" / "architecture.svg"
    assert render(dot, f"{tmp_path / 'new'}/") == tmp_path / "new" / "architecture.svg"  # a slash names a folder
    assert (tmp_path / "new" / "architecture.svg").read_bytes().lstrip().startswith(b"<?xml")
    assert not (tmp_path / "out.svg").exists() and not (tmp_path / "new.svg").exists()


# ------------------------------------------------------------------------------ sources
def test_load_architecture_sources(archs, tmp_path):
    arch = archs["tailored"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "architecture.json").write_text(json.dumps(arch))
    assert load_architecture(run) == json.loads(json.dumps(arch))
    assert load_architecture(run / "architecture.json") == load_architecture(str(run))
    module = archs["slim"]
    setattr(module, ARCHITECTURE_ATTR, json.dumps(arch, sort_keys=True))
    torch.save(module, tmp_path / "tailored.pt")
    assert load_architecture(tmp_path / "tailored.pt") == json.loads(json.dumps(arch))


def test_load_architecture_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "plain.pt").write_bytes(b"")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "linear.pt")
    cases = [("nope", "no such file"), ("empty", "no architecture.json"), ("bad.json", "not valid JSON"),
             ("list.json", "architecture"), ("plain.pt", "cannot load"), ("linear.pt", "carries no architecture")]
    for name, fragment in cases:
        target = tmp_path / name
        with pytest.raises(UserError, match=fragment) as err:
            load_architecture(target)
        assert "\n" not in str(err.value)
