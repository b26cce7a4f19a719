"""examples/mobilenet_v2.py: torchvision's MobileNetV2 layout without torchvision, loaded through --model."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from archsearch.graph.trace import trace
from archsearch.sources.models import load_factory

ROOT = Path(__file__).resolve().parents[1]
SPEC = f"{ROOT / 'examples' / 'mobilenet_v2.py'}:build"
INAT = ROOT.parent / "shared" / "data" / "inat-mobilenetv2"
PARAMS = 3_460_037  # MobileNetV2 1.0 with 965 classes, as the data's README records


@pytest.fixture(autouse=True)
def _one_thread():
    """Single-image passes gain nothing from intra-op threads, and on a busy machine the threads wait
    for each other: run them on one, then put the setting back for the other tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _bird(size: int = 224) -> torch.Tensor:
    """bird.png: shorter side to ``size`` (bilinear, antialiased), centre crop, ImageNet normalisation."""
    from PIL import Image
    with Image.open(INAT / "bird.png") as im:
        x = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float().div(255)[None]
    h, w = x.shape[-2:]
    nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = int(round((nh - size) / 2)), int(round((nw - size) / 2))
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def test_inat_weights_load_strictly_and_name_the_bird():
    if not INAT.is_dir():
        pytest.skip("../shared/data/inat-mobilenetv2 is absent")
    model = load_factory(SPEC)
    assert sum(p.numel() for p in model.parameters()) == PARAMS
    model.load_state_dict(torch.load(INAT / "mobilenet_v2_inat_bird.pth"), strict=True)
    model.eval()
    with torch.no_grad():
        probs = model(_bird()).softmax(1)[0]
    labels = (INAT / "inat_bird_labels.txt").read_text(encoding="utf-8").splitlines()
    assert len(labels) == 965 and labels[-1] == "background"  # no header: row i is class i
    top = int(probs.argmax())
    assert labels[top] == "Poecile atricapillus (Black-capped Chickadee)"
    assert top == 659
    # torchvision's own mobilenet_v2 with these weights and this preprocessing gives the same 0.935
    assert float(probs[top]) == pytest.approx(0.935, abs=0.02)


def test_trace_finds_the_inverted_residual_blocks():
    model = load_factory(SPEC)
    bg = trace(model, (3, 64, 64))
    # features.3 .. features.16: ten residual inverted-residual blocks and the four stride/width-changing
    # blocks between them; the stem (features.0-2) and the head (features.17, 18) are not blocks
    blocks = bg.universal()
    assert len(blocks) == 14 > 5
    assert [bg.edge(e)["name"] for e in blocks] == [f"features.{i}.conv" for i in range(3, 17)]
    assert bg.total_params == sum(p.numel() for p in model.parameters()) == PARAMS
