"""tailored.pt needs only torch: loaded in a Python where ``import archsearch`` and ``import backbones``
fail, it gives the logits it gives in-process."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from test_tailor import tiny_config

from archsearch.pipeline import tailor

# Run in a fresh interpreter, isolated (-I: no PYTHONPATH, no user site, no script folder on the path),
# from "/", with archsearch and backbones made unimportable before torch.load.
LOADER = textwrap.dedent("""
    import sys
    sys.modules["archsearch"] = None
    sys.modules["backbones"] = None
    import torch
    import torch.utils.cpp_extension as cpp

    def no_build(*args, **kwargs):
        raise RuntimeError("a C++ build was started")

    cpp.load = cpp.load_inline = no_build
    network, images, out = sys.argv[1:4]
    net = torch.load(network, weights_only=False).eval()
    with torch.no_grad():
        logits = net(torch.load(images, weights_only=True))
    assert not [m for m in sys.modules if m.startswith(("archsearch", "backbones")) and sys.modules[m] is not None]
    torch.save(logits, out)
""")


def logits_elsewhere(network: Path, images: torch.Tensor, folder: Path) -> torch.Tensor:
    torch.save(images, folder / "images.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-I", "-c", LOADER, str(network), str(folder / "images.pt"),
                             str(folder / "logits.pt")], capture_output=True, text=True, cwd="/", env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "archsearch" not in result.stderr  # not even a warning of ours
    return torch.load(folder / "logits.pt", weights_only=True)


@pytest.fixture(scope="module")
def run_with_proxies(tmp_path_factory) -> Path:
    """A tiny run whose chosen network keeps proxies (k=2, any accuracy within tolerance)."""
    tmp = tmp_path_factory.mktemp("standalone")
    report = tailor(tiny_config(tmp, sweep="2", tolerance=100, theta_sweep="none"), log=lambda m: None)
    assert report["chosen_k"] == 2 and report["memory_format"] == "channels_last"
    return tmp / "run"


def test_tailored_pt_loads_and_runs_without_archsearch(run_with_proxies, tmp_path):
    network = run_with_proxies / "tailored.pt"
    images = torch.randn(5, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    here = torch.load(network, weights_only=False).eval()
    assert any(n.op == "get_attr" and n.target.startswith("proxies.") for n in here.graph.nodes)  # it keeps proxies
    with torch.no_grad():
        expected = here(images)
    torch.testing.assert_close(logits_elsewhere(network, images, tmp_path), expected, rtol=0, atol=1e-5)


def test_a_slim_backbone_network_carries_no_reference_to_backbones(tmp_path):
    """fx traced through backbones' classes: the slim module must name none of them, nor archsearch."""
    import backbones
    from archsearch.graph.classifier import replace_classifier
    from archsearch.graph.trace import trace
    from archsearch.passes.codegen import build_slim, build_student, read_gates
    from archsearch.passes.insert_proxies import insert_proxies
    from archsearch.passes.prune import prune

    torch.manual_seed(0)
    bg = insert_proxies(replace_classifier(trace(backbones.get_backbone("resnet20"), (3, 32, 32)), 5), 3)
    student = build_student(bg)
    state = dict(student.state_dict())
    g = torch.Generator().manual_seed(1)
    state.update({k: torch.randn(v.shape, generator=g) * 3 for k, v in state.items() if k.startswith("gates.")})
    slim = build_slim(prune(read_gates(bg, state), 3, 0.05), memory_format=torch.channels_last).eval()
    slim.to(memory_format=torch.channels_last)
    assert "backbones" not in slim.code and "archsearch" not in slim.code
    assert all(type(m).__module__.startswith("torch.") for m in slim.modules())
    network = tmp_path / "slim.pt"
    torch.save(slim, network)
    assert b"backbones" not in network.read_bytes() and b"archsearch" not in network.read_bytes()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = slim(images)
    torch.testing.assert_close(logits_elsewhere(network, images, tmp_path), expected, rtol=0, atol=1e-5)
