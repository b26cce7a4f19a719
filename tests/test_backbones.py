"""Backbones: sizes, traceability, checkpoint loading errors, and real CIFAR-10 accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.fx
from PIL import Image

from archsearch.errors import UserError
from backbones import (
    BACKBONES,
    default_input_size,
    default_normalization,
    get_backbone,
    load_weights,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RESNET20_WEIGHTS = SHARED_DATA / "cifar10-resnets" / "resnet20-12fca82f.th"
CIFAR_TEST = SHARED_DATA / "cifar10-test"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, classes, expected",
    [
        ("resnet18", 1000, 11_689_512),
        ("resnet34", 1000, 21_797_672),
        ("resnet50", 1000, 25_557_032),
        ("resnet20", 10, 269_722),
    ],
)
def test_param_counts(name: str, classes: int, expected: int) -> None:
    assert n_params(get_backbone(name, num_classes=classes)) == expected


def test_resnet_keys_follow_torchvision_layout() -> None:
    keys = get_backbone("resnet50").state_dict().keys()
    for key in [
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.conv3.weight",
        "layer1.0.bn3.num_batches_tracked",
        "layer1.0.downsample.0.weight",
        "layer4.0.downsample.1.weight",
        "fc.bias",
    ]:
        assert key in keys
    assert "layer1.0.downsample.0.weight" not in get_backbone("resnet18").state_dict()


def test_resnet50_forward_small_input() -> None:
    model = get_backbone("resnet50", num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_fx_trace_matches_eager(name: str) -> None:
    model = get_backbone(name, num_classes=5, in_channels=1).eval()
    traced = torch.fx.symbolic_trace(model)
    side = min(default_input_size(name)[1], 64)
    x = torch.randn(2, 1, side, side)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))
    assert traced(x).shape == (2, 5)


def test_registry_defaults_and_unknown_name() -> None:
    assert default_input_size("resnet50") == (3, 224, 224)
    assert default_input_size("resnet56") == (3, 32, 32)
    assert default_input_size("wide_resnet26") == (3, 72, 72)
    assert default_normalization("resnet20") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with pytest.raises(UserError, match="unknown backbone 'vgg16'.*resnet20"):
        get_backbone("vgg16")


def test_load_round_trip_formats(tmp_path: Path) -> None:
    source = get_backbone("resnet20")
    wrapped = {"module." + k: v for k, v in source.state_dict().items()}
    payloads = [source.state_dict(), {"state_dict": wrapped}, {"model": source.state_dict()}]
    for i, payload in enumerate(payloads):
        f = tmp_path / f"w{i}.pth"
        torch.save(payload, f)
        target = get_backbone("resnet20")
        load_weights(target, f)
        torch.testing.assert_close(target.state_dict(), source.state_dict())


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_weights(get_backbone("resnet20"), tmp_path / "nope.pth")


def test_load_truncated_file(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save(get_backbone("resnet20").state_dict(), good)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(UserError, match="is not a readable PyTorch checkpoint") as info:
        load_weights(get_backbone("resnet20"), bad)
    assert "\n" not in str(info.value)


def test_load_wrong_architecture(tmp_path: Path) -> None:
    f = tmp_path / "r20.pth"
    torch.save(get_backbone("resnet20").state_dict(), f)
    with pytest.raises(UserError, match="weights do not fit resnet32: .*missing from the file"):
        load_weights(get_backbone("resnet32"), f)
    msg = r"weights do not fit resnet18: 'conv1.weight' has shape \(16, 3, 3, 3\)"
    with pytest.raises(UserError, match=msg):
        load_weights(get_backbone("resnet18"), f)


def test_classifier_mismatch_needs_ignore_classifier(tmp_path: Path) -> None:
    source = get_backbone("resnet20")
    f = tmp_path / "r20.pth"
    torch.save(source.state_dict(), f)
    five = get_backbone("resnet20", num_classes=5)
    msg = r"'linear.weight' has shape \(10, 64\) in the file but \(5, 64\) in the model"
    with pytest.raises(UserError, match=msg):
        load_weights(five, f)
    load_weights(five, f, ignore_classifier=True)
    torch.testing.assert_close(five.layer3[2].conv2.weight, source.layer3[2].conv2.weight)
    assert five.linear.weight.shape == (5, 64)


def _cifar_subset() -> tuple[torch.Tensor, torch.Tensor]:
    """Every 5th file (sorted) of each class: 2,000 images, pixels/255 normalised with ImageNet stats."""
    assert sorted(p.name for p in CIFAR_TEST.iterdir() if p.is_dir()) == CIFAR_CLASSES
    images, labels = [], []
    for label, cls in enumerate(CIFAR_CLASSES):
        for f in sorted((CIFAR_TEST / cls).iterdir())[::5]:
            images.append(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) / 255.0
    mean, std = default_normalization("resnet20")
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x, torch.tensor(labels)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")
def test_resnet20_checkpoint_accuracy_on_cifar10_jpeg() -> None:
    if not (RESNET20_WEIGHTS.is_file() and CIFAR_TEST.is_dir()):
        pytest.skip("CIFAR-10 weights or test images absent from ../shared/data")
    model = get_backbone("resnet20")
    load_weights(model, RESNET20_WEIGHTS)
    model.eval()
    x, y = _cifar_subset()
    assert len(y) == 2000
    with torch.no_grad():
        pred = torch.cat([model(chunk).argmax(1) for chunk in x.split(500)])
    accuracy = (pred == y).float().mean().item()
    print(f"resnet20 accuracy on the 2,000-image CIFAR-10 JPEG subset: {accuracy:.2%}")
    assert accuracy >= 0.80
