"""Where the network to tailor comes from: a named backbone, a user's ``FILE.py:FACTORY``, or a model zoo's
``torchvision:NAME`` / ``timm:NAME`` (:mod:`archsearch.sources.zoo`)."""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

import backbones
from archsearch.errors import UserError

DEFAULT_BACKBONE = "resnet20"
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "resnet20-fashion-mnist.pt"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SourceModel:
    """A pre-trained network and how its inputs look."""

    model: nn.Module
    name: str
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: str | None


def parse_input_size(text: str | None) -> tuple[int, int, int] | None:
    """``"3,224,224"`` → (3, 224, 224)."""
    if text is None:
        return None
    try:
        c, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--input-size must be C,H,W with three whole numbers (e.g. 3,224,224), not '{text}'") from None
    if min(c, h, w) < 1:
        raise UserError(f"--input-size must be positive, not '{text}'")
    return c, h, w


def absolute_model_spec(spec: str) -> str:
    """``FILE.py:FACTORY`` with FILE made absolute where it exists, so a run's config names the file
    wherever the run is later resumed or timed from (anything else is returned as given)."""
    file, sep, factory = spec.rpartition(":")
    path = Path(file)
    return f"{path.resolve()}:{factory}" if sep and path.is_file() and not path.is_absolute() else spec


def _failure(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}): a model file must not exit, on import or in its factory"
    return f"{type(exc).__name__}: {exc}"


def load_factory(spec: str) -> nn.Module:
    """Import ``FILE.py:FACTORY`` and call the factory; every failure is a UserError."""
    if ":" not in spec:
        raise UserError(f"--model must look like FILE.py:FACTORY (e.g. examples/mynet.py:build), torchvision:NAME "
                        f"or timm:NAME, not '{spec}'")
    file, factory = spec.rsplit(":", 1)
    path = Path(file)
    if not path.is_file():
        problem = "is a folder, not a Python file" if path.is_dir() else "does not exist"
        raise UserError(f"--model file '{file}' {problem}")
    module_name = f"archsearch_user_{path.stem}"
    argv = sys.argv
    sys.argv = [str(path)]  # a training script that parses its arguments on import sees none, not ours
    try:
        try:
            loader_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[module_name] = module
            loader_spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            raise UserError(f"--model file '{file}' fails to import: {_failure(exc)}") from exc
        fn = getattr(module, factory, None)
        if fn is None or not callable(fn):
            raise UserError(f"'{file}' has no callable '{factory}'; name a function or class that returns an "
                            "nn.Module")
        try:
            model = fn()
        except (Exception, SystemExit) as exc:
            raise UserError(f"'{spec}' raised {_failure(exc)}") from exc
    finally:
        sys.argv = argv
    if not isinstance(model, nn.Module):
        raise UserError(f"'{spec}' returned {type(model).__name__}, not a torch.nn.Module")
    return model


def resolve_model(backbone: str | None, model_spec: str | None, weights: str | None,
                  input_size: str | None = None, require_weights: bool = True, *,
                  trust_pickle: bool = False) -> SourceModel:
    """The source network: ``--model`` (``FILE.py:FACTORY``, ``torchvision:NAME`` or ``timm:NAME``) wins
    over ``--backbone``; with neither, the built-in default.

    ``require_weights=False`` allows an untrained backbone (for looking at structure only).
    ``trust_pickle=True`` (``--trust-pickle``) reads a weights file that holds Python objects other
    than tensors, which is refused otherwise (:func:`backbones.load_weights`)."""
    size = parse_input_size(input_size)
    if model_spec and model_spec.partition(":")[0] in ("torchvision", "timm"):
        from archsearch.sources.zoo import zoo_model  # imports torchvision or timm: only when asked for

        return zoo_model(model_spec, weights, input_size, trust_pickle=trust_pickle)
    if model_spec:
        model = load_factory(model_spec)
        if weights:
            backbones.load_weights(model, weights, ignore_classifier=True, trust_pickle=trust_pickle)
        return SourceModel(model, Path(model_spec.split(":")[0]).stem, size or (3, 224, 224),
                           IMAGENET_MEAN, IMAGENET_STD, weights)
    name = backbone or DEFAULT_BACKBONE
    default = backbones.default_input_size(name)  # an unknown name is the first thing to say
    if weights is None and name == DEFAULT_BACKBONE and require_weights:
        if not DEFAULT_WEIGHTS.is_file():
            raise UserError(f"the built-in weights {DEFAULT_WEIGHTS} are missing; reinstall archsearch, "
                            f"remake them with 'archsearch pretrain -o {DEFAULT_WEIGHTS}' "
                            "(docs/pretrained-weights.md), or pass --weights FILE")
        weights = str(DEFAULT_WEIGHTS)
    if weights is None and require_weights:
        raise UserError(f"--backbone {name} needs --weights FILE (a pre-trained state dict); archsearch "
                        "downloads nothing")
    shape = size or default
    model = backbones.get_backbone(name, in_channels=shape[0])
    if weights is not None:
        backbones.load_weights(model, weights, ignore_classifier=True, trust_pickle=trust_pickle)
    mean, std = backbones.default_normalization(name)
    return SourceModel(model, name, shape, mean, std, weights)
