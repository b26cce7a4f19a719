"""The Python API: archsearch.tailor on objects, the steps one by one, the example, and bad input."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.fx as fx
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import archsearch
from archsearch.data.objects import raw_data
from archsearch.errors import UserError
from tinytask import USER_MODEL

ROOT = Path(__file__).resolve().parents[1]
QUICK = dict(teacher_epochs=1, student_epochs=1, retrain_epochs=1, sweep="0,2", batch_size=32, progress=False)


def tiny_model() -> torch.nn.Module:
    """The tiny residual user model of tinytask, as an object."""
    scope: dict = {}
    exec(USER_MODEL, scope)  # noqa: S102 - the test's own model source
    return scope["build"]()


def tiny_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Three separable classes of 12x12 grey uint8 images (tinytask's), as tensors."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 60, size=(300, 12, 12), dtype=np.uint8)
    y = np.arange(300) % 3
    x[y == 0, :4] += 150
    x[y == 1, :, :4] += 150
    return torch.from_numpy(x), torch.from_numpy(y)


def test_import_archsearch_stays_light():
    code = "import sys, archsearch; assert 'torch' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_every_name_in_all_is_there():
    for name in archsearch.__all__:
        assert getattr(archsearch, name) is not None, name


def test_tailor_is_the_api_and_the_pipeline_has_its_own_module():
    import archsearch.api as api
    import archsearch.pipeline as pipeline

    assert archsearch.tailor is api.tailor
    assert callable(pipeline.tailor) and pipeline.tailor is not api.tailor


def test_tailor_a_module_on_tensors(tmp_path):
    result = archsearch.tailor(tiny_model(), tiny_images(), example_input=torch.zeros(1, 3, 12, 12), log=None, **QUICK)
    assert isinstance(result, archsearch.Tailored) and isinstance(result.module, fx.GraphModule)
    assert result.report["status"] == "ok" and result.report["num_classes"] == 3
    assert result.report["input_shape"] == [3, 12, 12] and result.report["tailored_accuracy"] > 90
    assert result(torch.zeros(2, 3, 12, 12)).shape == (2, 3)
    saved = result.save(tmp_path / "saved")
    assert {"report.json", "tailored.pt", "task.pack", "universal.pt"} <= {p.name for p in saved.iterdir()}
    assert result.render(tmp_path / "arch.dot").read_text().startswith("digraph")


def test_datasets_loaders_tensors_and_pil_images_are_the_same_images():
    x, y = tiny_images()
    from_tensors = raw_data((x, y))
    from_dataset = raw_data(TensorDataset(x, y))
    from_loader = raw_data(DataLoader(TensorDataset(x, y), batch_size=64))
    pil = [(Image.fromarray(a.numpy()), int(b)) for a, b in zip(x, y)]
    from_pil = raw_data(pil)
    for raw in (from_dataset, from_loader, from_pil):
        assert raw.classes == from_tensors.classes == ["0", "1", "2"]
        np.testing.assert_array_equal(raw.train.x, from_tensors.train.x)
        np.testing.assert_array_equal(raw.train.labels, y.numpy())
    assert raw_data("digits") == "digits"


def test_images_of_several_sizes_and_named_classes():
    items = [(np.zeros((8 + i % 3, 9, 3), np.uint8), i % 2) for i in range(10)]
    raw = raw_data(items, classes=["cat", "dog"])
    assert raw.classes == ["cat", "dog"] and len(raw.train) == 10


def test_the_steps_one_by_one():
    bg = archsearch.trace(tiny_model(), torch.zeros(1, 3, 12, 12))
    assert len(bg.universal()) == 4 and bg.total_params == sum(p.numel() for p in tiny_model().parameters())
    student = archsearch.insert_proxies(bg, skips=3)
    assert len(student.proxies()) > 0
    cost = archsearch.expected_complexity(student)
    assert 0 < float(cost) < 1
    pruned = archsearch.prune(student, k=2, theta=0.05)
    assert len(pruned.universal()) == 2
    slim, reference = archsearch.build(pruned).eval(), archsearch.build(pruned, "student").eval()
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(slim(x), reference(x), atol=1e-5, rtol=1e-5)


def test_a_backbone_name_traces_with_its_own_input_size():
    bg = archsearch.trace("resnet20")
    assert len(bg.universal()) == 9 and bg.g.graph["input_shape"] == (3, 32, 32)
    assert archsearch.source_model("resnet20", require_weights=True).weights.endswith("resnet20-fashion-mnist.pt")
    with pytest.raises(UserError, match="needs --weights"):
        archsearch.source_model("resnet50", require_weights=True)


@pytest.mark.parametrize("call, words", [
    (lambda: archsearch.tailor(tiny_model(), tiny_images(), example_input=(3, 12, 12), epochs=3), ("no option 'epochs'",)),
    (lambda: archsearch.tailor(tiny_model(), tiny_images()), ("example_input",)),
    (lambda: archsearch.tailor("not a model at all", tiny_images()), ("unknown backbone",)),
    (lambda: archsearch.tailor(42, tiny_images(), example_input=(3, 12, 12)), ("nn.Module",)),
    (lambda: archsearch.tailor(tiny_model(), (torch.randn(20, 3, 12, 12), torch.arange(20) % 2),
                               example_input=(3, 12, 12)), ("values from", "as stored")),
    (lambda: archsearch.tailor(tiny_model(), [1, 2, 3], example_input=(3, 12, 12)), ("int items", "(image, label)")),
    (lambda: archsearch.tailor(tiny_model(), object(), example_input=(3, 12, 12)), ("give a Dataset",)),
    (lambda: archsearch.trace(tiny_model(), (3, 12)), ("example_input has shape",)),
    (lambda: archsearch.build(archsearch.trace(tiny_model(), (3, 12, 12)), "fast"), ("'slim' or 'student'",)),
])
def test_bad_input_is_one_clear_line(call, words):
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def _example():
    spec = importlib.util.spec_from_file_location("tailor_resnet50_example", ROOT / "examples" / "tailor_resnet50.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_is_short_and_tailors_a_small_model(tmp_path):
    source = (ROOT / "examples" / "tailor_resnet50.py").read_text()
    assert len(source.splitlines()) < 30 and "resnet50()" in source and "archsearch.tailor(" in source
    result = _example().tailor_images(tiny_model(), tiny_images(), size=12, epochs=1, sweep="0,2", batch_size=32,
                                      progress=False, log=None, out=str(tmp_path / "run"))
    assert result.report["status"] == "ok" and (tmp_path / "run" / "tailored.pt").is_file()
