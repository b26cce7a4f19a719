"""Pre-trainable residual backbones by name, their input conventions, and checkpoint loading.

``get_backbone("resnet20", num_classes=5)`` builds a model; ``load_weights(model, path)`` fills it from
a checkpoint file and turns every way that can fail into one clear :class:`UserError` line.

Files are read safely: ``torch.load(..., weights_only=True)``, which unpickles tensors, numbers,
strings and containers and nothing else. A file that holds other Python objects (an old
checkpoint with an ``argparse.Namespace``, or a crafted one whose unpickling would run a command)
is refused with one line naming what it holds and ``--trust-pickle`` (``trust_pickle=True``), which
reads it with full unpickling: only for files whose source you trust.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from archsearch.errors import UserError

from .cifar_resnet import resnet20, resnet32, resnet44, resnet56, resnet110
from .resnet import resnet18, resnet34, resnet50
from .wide_resnet import wide_resnet26

__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "get_backbone",
    "default_input_size",
    "default_normalization",
    "load_weights",
    "read_state_dict",
    "classifier_prefix",
    "torch_load",
    "TRUST_FLAG",
]

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "wide_resnet26": wide_resnet26,
}

_INPUT_SIDE: dict[str, int] = {
    "resnet18": 224,
    "resnet34": 224,
    "resnet50": 224,
    "resnet20": 32,
    "resnet32": 32,
    "resnet44": 32,
    "resnet56": 32,
    "resnet110": 32,
    "wide_resnet26": 72,
}

# All backbones use ImageNet statistics; akamaster's CIFAR checkpoints were trained with them too.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_MAX_LISTED = 3  # how many offending keys an error message names


def _check_name(name: str) -> str:
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; known backbones: {', '.join(BACKBONES)}")
    return name


def get_backbone(name: str, num_classes: Optional[int] = None, in_channels: int = 3) -> nn.Module:
    """Build backbone ``name``; ``num_classes=None`` keeps its default (1000 ImageNet, 10 otherwise)."""
    factory = BACKBONES[_check_name(name)]
    if num_classes is None:
        return factory(in_channels=in_channels)
    return factory(num_classes=num_classes, in_channels=in_channels)


def default_input_size(name: str, in_channels: int = 3) -> tuple[int, int, int]:
    """Input shape ``(C, H, W)`` the backbone was designed for (224, 32 or 72 px square)."""
    side = _INPUT_SIDE[_check_name(name)]
    return (in_channels, side, side)


def default_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(mean, std)`` applied to pixels scaled to [0, 1]."""
    _check_name(name)
    return IMAGENET_MEAN, IMAGENET_STD


# ---------------------------------------------------------------------------------------------
# Checkpoint loading


def _one_line(exc: BaseException) -> str:
    """The exception's first sentence (torch's loader errors go on with advice about other cases)."""
    text = " ".join(str(exc).split()).split(". ")[0].rstrip(".")
    if len(text) > 200:
        text = text[:199] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


TRUST_FLAG = "--trust-pickle"  # the command-line flag that accepts a file needing full unpickling


def pickle_reason(exc: BaseException) -> Optional[str]:
    """Why torch's weights-only loader refused a file that full unpickling could read (what it names),
    or None where the failure is another one (truncated, not a torch file)."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" not in text:
        return None
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it names the Python object {found.group(1)}"
    found = re.search(r"Unsupported operand \d+", text)
    return f"{found.group(0).lower()} of pickle" if found else "it holds Python objects other than tensors"


def torch_load(path: Union[str, "os.PathLike[str]"], what: str, trust_pickle: bool = False) -> Any:
    """``torch.load`` of a user's file onto the CPU, weights-only unless ``trust_pickle``.

    A file that needs full unpickling is refused with one :class:`UserError` line naming what it
    holds and the flag; any other failure propagates as torch raised it."""
    if trust_pickle:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = pickle_reason(exc)
        if reason is None:
            raise
        raise UserError(f"{what} {os.fspath(path)} holds pickled Python objects, not only tensors ({reason}); "
                        f"reading it could run code, so it is refused: pass {TRUST_FLAG} (trust_pickle=True) "
                        "to read it anyway, only if you trust where it came from") from None


def _read_checkpoint(path: str, trust_pickle: bool = False) -> Any:
    """The file's object, read weights-only unless ``trust_pickle`` (see :func:`torch_load`)."""
    try:
        return torch_load(path, "weights file", trust_pickle)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated, not a checkpoint, foreign pickle ...
        raise UserError(f"{path} is not a readable PyTorch checkpoint ({_one_line(exc)})") from None


def _state_dict_of(obj: Any, path: str) -> dict[str, torch.Tensor]:
    """The tensors of a plain state dict, ``{"state_dict": ...}``, ``{"model": ...}`` or a pickled module."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], (Mapping, nn.Module)):
                obj = obj[key]
                break
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a state dict of model weights")
    state = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not state:
        found = ", ".join(repr(k) for k in list(obj)[:5])
        raise UserError(f"{path} holds no weight tensors (top-level keys: {found or 'none'})")
    if all(k.startswith("module.") for k in state):  # saved from nn.DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def read_state_dict(path: Union[str, "os.PathLike[str]"], trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The weight tensors of a checkpoint file: a PyTorch file (see :func:`load_weights`) or a
    ``.safetensors`` file (timm's and Hugging Face's format, read with the ``safetensors`` package)."""
    path = os.fspath(path)
    if not path.endswith(".safetensors"):
        return _state_dict_of(_read_checkpoint(path, trust_pickle), path)
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise UserError(f"{path} is a safetensors file; reading it needs the safetensors package "
                        "(pip install safetensors)") from None
    try:
        return _state_dict_of(load_file(path), path)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or not a safetensors file
        raise UserError(f"{path} is not a readable safetensors file ({_one_line(exc)})") from None


def classifier_prefix(model: nn.Module) -> Optional[str]:
    """``"fc."``/``"linear."``: the prefix of the model's last ``nn.Linear`` (its classifier)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] + "." if names else None


def _and_more(n: int, one: str, many: str) -> str:
    return "" if n <= 0 else f" (and {n} more {one if n == 1 else many})"


def _listed(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_MAX_LISTED])
    return shown + (f" and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")


def load_weights(
    model: nn.Module, path: Union[str, "os.PathLike[str]"], ignore_classifier: bool = False,
    *, trust_pickle: bool = False,
) -> None:
    """Copy a checkpoint's weights into ``model``; every key and shape must fit.

    Accepts a plain state dict or a dict with a ``"state_dict"`` or ``"model"`` entry; a ``module.``
    prefix (DataParallel) is stripped and missing ``num_batches_tracked`` buffers are tolerated.
    ``ignore_classifier=True`` skips the final Linear's keys (file and model alike), leaving that
    layer as initialised: use it when the new task has another number of classes.
    The file is read weights-only; one that holds other Python objects is refused unless
    ``trust_pickle=True`` (:func:`torch_load`).
    Raises :class:`UserError` (one line) when the file is missing, unreadable, refused or does not fit.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError(f"weights file {path} does not exist")
    if os.path.isdir(path):
        raise UserError(f"weights file {path} is a directory, not a PyTorch checkpoint")
    state = read_state_dict(path, trust_pickle)
    target = model.state_dict()
    name = getattr(model, "backbone_name", type(model).__name__)
    head = classifier_prefix(model)

    def skipped(key: str) -> bool:
        return key.endswith("num_batches_tracked") or (
            ignore_classifier and head is not None and key.startswith(head)
        )

    missing = [k for k in target if k not in state and not skipped(k)]
    unexpected = [k for k in state if k not in target and not skipped(k)]
    wrong = [k for k in state if k in target and not skipped(k) and state[k].shape != target[k].shape]
    if missing or unexpected or wrong:
        problems = []
        if wrong:
            k = wrong[0]
            problems.append(
                f"{k!r} has shape {tuple(state[k].shape)} in the file but {tuple(target[k].shape)} "
                "in the model" + _and_more(len(wrong) - 1, "shape differs", "shapes differ")
            )
        if missing:
            problems.append(f"{len(missing)} keys missing from the file: {_listed(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys in the file: {_listed(unexpected)}")
        hint = "; is the file for another architecture?"
        if head is not None and not missing and not unexpected and all(k.startswith(head) for k in wrong):
            hint = (
                "; only the classifier differs (another number of classes?):"
                " load with ignore_classifier=True"
            )
        raise UserError(f"weights do not fit {name}: " + "; ".join(problems) + hint)
    fitting = {k: v for k, v in state.items() if k in target and not skipped(k)}
    # num_batches_tracked comes along when present; strict=False only lets it (and the skipped
    # classifier) be absent, everything else was checked above.
    fitting.update({k: v for k, v in state.items() if k in target and k.endswith("num_batches_tracked")})
    model.load_state_dict(fitting, strict=False)
