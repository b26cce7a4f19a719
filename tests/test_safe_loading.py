"""Loading is safe by default: a weights file, a task pack or a universal.pt that carries a pickle
payload is refused with one line and the payload never runs; ``--trust-pickle`` reads a weights
file anyway. Packs and universal blocks are data: any network of torch.nn layers round-trips."""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import backbones
from archsearch.cli import main
from archsearch.errors import UserError
from archsearch.graph.trace import trace
from archsearch.io.pack import PACK_FORMAT, UNIVERSAL_FORMAT, write_pack, write_universal
from archsearch.passes.codegen import build_slim, build_student, read_gates
from archsearch.passes.insert_proxies import insert_proxies
from archsearch.passes.prune import prune
from archsearch.runtime.tasks import load_tasks
from randnets import BlockSpec, RandNet, rand_nets, randomize_batchnorm

INPUT = (3, 8, 8)


class Scale(torch.nn.Module):
    """A layer of the user's own (not torch.nn's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class Payload:
    """Unpickling it runs a shell command that creates ``marker``: what a crafted file can do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def one_line_refusal(text: str, *fragments: str) -> None:
    assert "\n" not in text.strip(), text
    for fragment in ("--trust-pickle", *fragments):
        assert fragment in text, (fragment, text)


def _tasks_files(folder: Path, net: torch.nn.Module | None = None, seed: int = 0, k: int = 1,
                 layout: torch.memory_format = torch.channels_last) -> tuple[Path, Path, torch.nn.Module]:
    """universal.pt and task.pack of a pruned network with random gates (no training), and its slim module."""
    if net is None:
        torch.manual_seed(0)
        net = RandNet(8, [BlockSpec(8, 1, False, True, False), BlockSpec(16, 2, True, True, False),
                          BlockSpec(16, 1, False, True, False)]).eval()
        randomize_batchnorm(net, 0)
    bg = insert_proxies(trace(net, INPUT), 3)
    student = build_student(bg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in student.named_parameters():
            if name.startswith("gates."):
                p.copy_(torch.randn(p.shape, generator=g) * 3)
    pruned = prune(read_gates(bg, student.state_dict()), k=min(k, len(bg.universal())), theta=0.0)
    slim = build_slim(pruned, memory_format=layout).eval()
    classifier = bg.g.graph["classifier"]
    universal, pack = folder / "universal.pt", folder / "task.pack"
    sha = write_universal(bg.gm, classifier, universal)
    meta = {"name": "t", "classes": ["a", "b", "c", "d"], "input_shape": list(INPUT), "mean": [0.0] * 3,
            "std": [1.0] * 3, "memory_format": "channels_last" if layout == torch.channels_last else "nchw"}
    write_pack(slim, bg.gm, classifier, sha, pack, meta)
    return universal, pack, slim


@pytest.fixture
def files(tmp_path):
    return _tasks_files(tmp_path)


# -- weights files ------------------------------------------------------------------------------------


def _evil_weights(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "MARKER"
    state = dict(backbones.get_backbone("resnet20").state_dict())
    state["extra"] = Payload(marker)
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    return path, marker


def test_a_weights_file_with_a_payload_is_refused_and_never_run(tmp_path):
    path, marker = _evil_weights(tmp_path)
    with pytest.raises(UserError) as info:
        backbones.load_weights(backbones.get_backbone("resnet20"), path)
    one_line_refusal(str(info.value), str(path), "system")
    assert not marker.exists()
    backbones.load_weights(backbones.get_backbone("resnet20"), path, trust_pickle=True)  # trusted: read (and run)
    assert marker.exists()


def test_the_cli_refuses_it_with_exit_2_and_reads_it_with_trust_pickle(tmp_path):
    path, marker = _evil_weights(tmp_path)
    for command in (["inspect"], ["render", "-o", str(tmp_path / "a.dot")]):
        result = CliRunner().invoke(main, [*command, "--backbone", "resnet20", "--weights", str(path)])
        assert result.exit_code == 2
        assert result.stderr.startswith("archsearch: error: ")
        one_line_refusal(result.stderr, str(path))
        assert not marker.exists()
    result = CliRunner().invoke(main, ["inspect", "--backbone", "resnet20", "--weights", str(path), "--trust-pickle"])
    assert result.exit_code == 0, result.output
    assert marker.exists()  # what trusting means


def test_an_old_checkpoint_with_python_objects_needs_trust(tmp_path):
    import argparse

    path = tmp_path / "old.pth"
    torch.save({"args": argparse.Namespace(lr=0.1), "state_dict": backbones.get_backbone("resnet20").state_dict()}, path)
    with pytest.raises(UserError) as info:
        backbones.load_weights(backbones.get_backbone("resnet20"), path)
    one_line_refusal(str(info.value), "argparse.Namespace")
    backbones.load_weights(backbones.get_backbone("resnet20"), path, trust_pickle=True)


# -- task packs and universal blocks ------------------------------------------------------------------


def test_packs_and_universal_blocks_are_data(files):
    universal, pack, slim = files
    assert torch.load(universal, weights_only=True)["format"] == UNIVERSAL_FORMAT
    stored = torch.load(pack, weights_only=True)
    assert stored["format"] == PACK_FORMAT and "forward_source" not in stored and "module" not in stored
    assert {n["op"] for n in json.loads(stored["graph"])["nodes"]} <= {"placeholder", "get_attr", "call_function",
                                                                       "call_method", "call_module", "output"}
    (task,) = load_tasks(universal, [pack])
    x = torch.randn(2, *INPUT)
    with torch.no_grad():
        torch.testing.assert_close(task(x), slim(x), rtol=1e-5, atol=1e-6)


def _resave(path: Path, **changes) -> None:
    obj = torch.load(path, weights_only=True)
    obj.update(changes)
    torch.save(obj, path)


def test_a_pack_or_universal_file_with_a_payload_is_refused_and_never_run(files, tmp_path):
    universal, pack, _ = files
    marker = tmp_path / "MARKER"
    for path in (pack, universal):
        original = path.read_bytes()
        _resave(path, extra=Payload(marker))
        with pytest.raises(UserError) as info:
            load_tasks(universal, [pack])
        one_line_refusal(str(info.value), str(path), "system")
        command = ["packs", str(universal), str(pack)]
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2 and result.stderr.startswith("archsearch: error: ")
        one_line_refusal(result.stderr, str(path))
        image = tmp_path / "x.png"
        from PIL import Image

        Image.new("RGB", (8, 8)).save(image)
        result = CliRunner().invoke(main, ["predict", "--universal", str(universal), "--task", str(pack), str(image)])
        assert result.exit_code == 2
        assert not marker.exists()
        path.write_bytes(original)
    assert CliRunner().invoke(main, ["packs", str(universal), str(pack)]).exit_code == 0


def test_a_pack_that_stores_code_is_refused_unread(files, tmp_path):
    """Format 2 (older archsearch): Python source that a load would execute."""
    universal, pack, _ = files
    marker = tmp_path / "MARKER"
    source = f"import os\nos.system({f'touch {marker}'!r})\ndef forward(self, x):\n    return x\n"
    _resave(pack, format="archsearch-task-pack/2", forward_source=source)
    with pytest.raises(UserError) as info:
        load_tasks(universal, [pack])
    one_line_refusal(str(info.value), "Python code")
    assert not marker.exists()


def _edit_graph(pack: Path, edit) -> None:
    stored = torch.load(pack, weights_only=True)
    graph = json.loads(stored["graph"])
    edit(graph["nodes"])
    _resave(pack, graph=json.dumps(graph))


def _first(nodes, op):
    return next(n for n in nodes if n["op"] == op)


@pytest.mark.parametrize("edit, fragment", [
    (lambda nodes: _first(nodes, "call_function").update(target="os.system"), "os.system"),
    (lambda nodes: _first(nodes, "call_function").update(target="torch.load"), "torch.load"),
    (lambda nodes: _first(nodes, "call_function").update(target="builtins.exec"), "builtins.exec"),
    (lambda nodes: _first(nodes, "call_function").update(target="torch.from_file"), "torch.from_file"),
    (lambda nodes: _first(nodes, "call_method").update(target="__reduce__"), "__reduce__"),
    (lambda nodes: _first(nodes, "call_method").update(target="register_hook"), "register_hook"),
    (lambda nodes: _first(nodes, "call_module").update(target="fc"), "'fc'"),
    (lambda nodes: _first(nodes, "get_attr").update(target="training"), "'training'"),
    (lambda nodes: _first(nodes, "call_function").update(name="x = __import__('os')"), "node named"),
    (lambda nodes: nodes.insert(1, {"name": "g", "op": "call_function", "target": "builtins.getattr",
                                    "args": {"tuple": [{"node": "x"}, "__class__"]}, "kwargs": {"dict": []}}),
     "__class__"),
])
def test_a_pack_graph_that_names_anything_outside_the_allowlist_is_refused(files, edit, fragment):
    universal, pack, _ = files
    _edit_graph(pack, edit)
    with pytest.raises(UserError) as info:
        load_tasks(universal, [pack])
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("spec", [["torch.nn.Sequential", {"dict": []}], ["os.system", {"dict": []}],
                                  ["torch.nn.Conv2d", {"dict": [["in_channels", {"function": "os.system"}]]}]])
def test_universal_blocks_rebuild_only_torch_nn_layers_from_plain_arguments(files, spec):
    universal, pack, _ = files
    stored = torch.load(universal, weights_only=True)
    first = next(iter(stored["modules"]))
    stored["modules"][first] = spec
    torch.save(stored, universal)
    with pytest.raises(UserError, match="not a readable universal-blocks file"):
        load_tasks(universal, [pack])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(net=rand_nets(), seed=st.integers(0, 1000), nchw=st.booleans())
def test_any_network_of_torch_nn_layers_round_trips_as_data(tmp_path_factory, net, seed, nchw):
    """Random residual networks (PReLU, GELU, squeeze-excitation, concatenation, pre-activation):
    universal blocks and pack are data, and the loaded task computes the slim module's logits."""
    layout = torch.contiguous_format if nchw else torch.channels_last
    universal, pack, slim = _tasks_files(tmp_path_factory.mktemp("rt"), net, seed, layout=layout)
    assert torch.load(universal, weights_only=True)["format"] == UNIVERSAL_FORMAT
    assert torch.load(pack, weights_only=True)["format"] == PACK_FORMAT
    (task,) = load_tasks(universal, [pack])
    x = torch.randn(3, *INPUT, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(task(x), slim.to(memory_format=layout)(x.contiguous(memory_format=layout)),
                                   rtol=1e-5, atol=1e-5)


def test_a_network_with_a_layer_of_its_own_gets_pickled_files_that_need_trust(tmp_path):
    """A user's layer class cannot be rebuilt from data: universal.pt is pickled, and says why."""
    torch.manual_seed(0)
    net = RandNet(8, [BlockSpec(8, 1, False, True, False), BlockSpec(8, 1, False, True, False)]).eval()
    net.stem.append(Scale())
    from archsearch.graph.trace import trace as trace_

    bg = trace_(net, INPUT, leaf_modules=["Scale"])
    classifier = bg.g.graph["classifier"]
    write_universal(bg.gm, classifier, tmp_path / "universal.pt")
    stored = torch.load(tmp_path / "universal.pt", weights_only=False)
    assert stored["format"] == "archsearch-universal/1" and "Scale" in stored["pickled_because"]
    from archsearch.runtime.tasks import load_universal

    with pytest.raises(UserError) as info:
        load_universal(tmp_path / "universal.pt")
    one_line_refusal(str(info.value), "universal.pt")
    assert load_universal(tmp_path / "universal.pt", trust_pickle=True).archsearch_sha256 == stored["sha256"]
