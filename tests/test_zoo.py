"""torchvision:NAME and timm:NAME: the fast subset of docs/zoo.md, weights and caches, truthful tracing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from PIL import Image

import archsearch
from archsearch.tools.check import check_model
from archsearch.cli import main
from archsearch.errors import UserError
from archsearch.graph.trace import trace
from archsearch.sources.zoo import import_timm, import_torchvision, zoo_model

ROOT = Path(__file__).resolve().parents[1]
INAT = ROOT.parent / "shared" / "data" / "inat-mobilenetv2"
CHICKADEE = "Poecile atricapillus (Black-capped Chickadee)"


def _needs(package: str) -> None:
    try:
        import_timm() if package == "timm" else import_torchvision()
    except UserError:
        pytest.skip(f"{package} is not installed (pip install archsearch[{package}])")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


FAST = ["torchvision:resnet18", "torchvision:mobilenet_v2", "torchvision:mobilenet_v3_small",
        "torchvision:shufflenet_v2_x0_5", "torchvision:mnasnet0_5", "torchvision:squeezenet1_1",
        "torchvision:efficientnet_b0", "torchvision:regnet_x_400mf", "torchvision:googlenet", "torchvision:alexnet",
        "timm:resnet10t", "timm:convnext_atto", "timm:mobilenetv3_small_050", "timm:dla46_c", "timm:regnetx_002"]


@pytest.mark.parametrize("spec", FAST)
def test_a_zoo_model_traces_tailors_one_step_and_builds_an_equal_slim_module(spec):
    _needs(spec.split(":")[0])
    torch.manual_seed(0)
    model = zoo_model(spec).model
    result = check_model(model, (3, 32, 32) if "alexnet" not in spec else (3, 64, 64))
    assert result.reason is None, result.reason
    assert result.equal and result.kept_blocks < result.blocks
    assert (result.macs, result.params) == (result.torch_macs, result.torch_params)


def test_torchvision_resnet50_is_the_builtin_resnet50():
    _needs("torchvision")
    import backbones

    ours = archsearch.trace("torchvision:resnet50")
    builtin = trace(backbones.get_backbone("resnet50"), (3, 224, 224))
    assert (len(ours.universal()), ours.total_macs, ours.total_params) == (16, 4_089_184_256, 25_557_032)
    assert (len(builtin.universal()), builtin.total_macs, builtin.total_params) == (16, 4_089_184_256, 25_557_032)


def test_input_size_and_normalisation_come_from_the_library():
    _needs("timm")
    inception = zoo_model("torchvision:inception_v3")
    assert inception.input_shape == (3, 299, 299) and inception.model.AuxLogits is None
    timm_model = zoo_model("timm:dla46_c")
    assert timm_model.input_shape == (3, 224, 224) and timm_model.mean == pytest.approx((0.485, 0.456, 0.406))
    assert zoo_model("timm:dla46_c", input_size="3,64,64").input_shape == (3, 64, 64)


@pytest.mark.parametrize("spec, size", [("torchvision:vit_b_32", 224), ("torchvision:swin_t", 64)])
def test_transformers_get_one_line_on_what_archsearch_supports(spec, size):
    _needs("torchvision")
    with pytest.raises(UserError) as info:
        archsearch.trace(zoo_model(spec).model, (3, size, size))
    message = str(info.value)
    assert "\n" not in message and "2-d convolutional networks" in message and "not vision transformers" in message


def test_timm_drop_path_is_kept_whole_and_said(capfd):
    _needs("timm")
    timm = import_timm()
    model = timm.create_model("resnet10t", drop_path_rate=0.2, zero_init_last=False)  # branches that do something
    bg = trace(model, (3, 32, 32))
    assert "DropPath modules (drop probability up to 0.2) are kept whole" in capfd.readouterr().err
    calls = [n for n in bg.gm.graph.nodes if n.op == "call_module" and type(bg.gm.get_submodule(n.target)).__name__ == "DropPath"]
    assert calls and model.training  # the model's own modes are left as they were
    x = torch.randn(8, 3, 32, 32)
    model.eval()
    bg.gm.eval()
    with torch.no_grad():
        torch.testing.assert_close(bg.gm(x), model(x))  # no training-time randomness in evaluation
    bg.gm.train()
    with torch.no_grad():  # and still the model's own drop-path while training
        first = bg.gm(x)
        assert any(not torch.equal(first, bg.gm(x)) for _ in range(5))


class _MyDrop(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (torch.rand_like(x[:, :1, :1, :1]) > 0.2) if self.training else x


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.conv, self.drop, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), _MyDrop(), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.drop(self.conv(x)))
        return self.fc(x.mean((2, 3)))


def test_a_module_whose_graph_depends_on_the_mode_is_refused_naming_it():
    with pytest.raises(UserError) as info:
        trace(_Net(), (3, 8, 8))
    message = str(info.value)
    assert "\n" not in message and "module 'drop' (_MyDrop)" in message and "leaf_modules=['_MyDrop']" in message
    assert len(trace(_Net(), (3, 8, 8), leaf_modules=["_MyDrop"]).universal()) == 1


def test_a_cached_torchvision_checkpoint_is_read_and_named(tmp_path, monkeypatch, capfd):
    _needs("torchvision")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    tv = import_torchvision()
    url = tv.models.get_model_weights("mobilenet_v3_small").DEFAULT.url
    (tmp_path / "checkpoints").mkdir()
    saved = tv.models.mobilenet_v3_small()
    torch.save(saved.state_dict(), tmp_path / "checkpoints" / Path(url).name)
    source = zoo_model("torchvision:mobilenet_v3_small")
    assert source.weights == str(tmp_path / "checkpoints" / Path(url).name)
    assert str(tmp_path / "checkpoints") in capfd.readouterr().err
    torch.testing.assert_close(source.model.state_dict(), saved.state_dict())


def test_timm_weights_load_from_safetensors_with_their_classes(tmp_path):
    _needs("timm")
    from safetensors.torch import save_file

    timm = import_timm()
    saved = timm.create_model("resnet10t", num_classes=7)
    save_file(saved.state_dict(), str(tmp_path / "w.safetensors"))
    source = zoo_model("timm:resnet10t", weights=str(tmp_path / "w.safetensors"))
    assert source.model.fc.out_features == 7
    torch.testing.assert_close(source.model.state_dict(), saved.state_dict())


def test_unknown_names_and_missing_packages_are_one_line(monkeypatch):
    _needs("timm")
    with pytest.raises(UserError, match="did you mean torchvision:resnet50"):
        zoo_model("torchvision:resnet5")
    monkeypatch.setitem(__import__("sys").modules, "timm", None)
    with pytest.raises(UserError, match=r"pip install archsearch\[timm\]"):
        zoo_model("timm:resnet10t")


def test_inspect_a_zoo_model_on_the_command_line():
    _needs("torchvision")
    r = CliRunner().invoke(main, ["inspect", "--model", "torchvision:resnet18", "--input-size", "3,32,32"])
    assert r.exit_code == 0, r.output
    assert "8 universal blocks" in r.output and "11,689,512 parameters" in r.output


def _bird(size: int, mean, std) -> torch.Tensor:
    """bird.png as archsearch feeds images: shorter side to ``size``, centre crop, normalised."""
    from archsearch.data.transform import resize_centre_crop

    with Image.open(INAT / "bird.png") as im:
        x = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    x = resize_centre_crop(x, (size, size))
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_real_inat_weights_name_the_bird_before_tailoring():
    if not INAT.is_dir():
        pytest.skip("../shared/data/inat-mobilenetv2 is absent")
    _needs("torchvision")
    weights = INAT / "mobilenet_v2_inat_bird.pth"
    r = CliRunner().invoke(main, ["inspect", "--model", "torchvision:mobilenet_v2", "--weights", str(weights),
                                  "--input-size", "3,224,224", "--json"])
    assert r.exit_code == 0, r.output
    assert '"total_params": 3460037' in r.output and '"out_shape": [\n        965' in r.output
    source = archsearch.source_model("torchvision:mobilenet_v2", weights=weights)
    model = source.model.eval()
    with torch.no_grad():
        probs = model(_bird(source.input_shape[1], source.mean, source.std)).softmax(1)[0]
    labels = (INAT / "inat_bird_labels.txt").read_text(encoding="utf-8").splitlines()
    assert len(labels) == 965 and labels[int(probs.argmax())] == CHICKADEE
