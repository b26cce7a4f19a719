"""archsearch export: a finished run's tailored network as ONNX (standard operators, dynamic batch)
and as a torch.export program; both give the slim module's logits."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from test_tailor import tiny_config

from archsearch.cli import main
from archsearch.pipeline import tailor

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny run whose network keeps proxies."""
    tmp = tmp_path_factory.mktemp("export")
    tailor(tiny_config(tmp, sweep="2", tolerance=100, theta_sweep="none"), log=lambda m: None)
    return tmp / "run"


def slim_logits(run: Path, x: torch.Tensor) -> torch.Tensor:
    net = torch.load(run / "tailored.pt", weights_only=False).eval()
    with torch.no_grad():
        return net(x)


def export(*args: str) -> Path:
    result = CliRunner().invoke(main, ["export", *args])
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path.is_file()
    return path


def test_pt2_export_gives_the_slim_logits_at_any_batch(run):
    path = export(str(run), "--format", "pt2")
    assert path == run / "tailored.pt2"
    program = torch.export.load(str(path)).module()
    for batch in (1, 8):
        x = torch.randn(batch, 3, 12, 12)
        with torch.no_grad():
            got = program(x)
        assert (got - slim_logits(run, x)).abs().max() <= TOLERANCE


def test_onnx_export_is_standard_operators_with_a_dynamic_batch(run, tmp_path):
    import onnx
    import onnxruntime as ort

    path = export(str(run), "--format", "onnx", "-o", str(tmp_path / "net.onnx"))
    assert path == tmp_path / "net.onnx" and sorted(os.listdir(tmp_path)) == ["net.onnx"]  # no temporary left
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"} and min(o.version for o in model.opset_import) >= 17
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (images,) = session.get_inputs()
    assert images.name == "images" and not isinstance(images.shape[0], int)  # the batch is symbolic
    for batch in (1, 8):
        x = torch.randn(batch, 3, 12, 12)
        (got,) = session.run(None, {"images": x.numpy()})
        assert np.abs(got - slim_logits(run, x).numpy()).max() <= TOLERANCE


def test_without_onnx_the_command_says_what_to_install(run, monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    result = CliRunner().invoke(main, ["export", str(run), "--format", "onnx", "-o", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("archsearch: error: ")
    assert "pip install archsearch[export]" in result.stderr and "onnx" in result.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_export_of_a_folder_that_holds_no_run_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["export", str(tmp_path), "--format", "pt2"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and str(tmp_path) in result.stderr
