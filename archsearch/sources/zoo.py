"""Networks from torchvision's and timm's model zoos: ``torchvision:NAME`` and ``timm:NAME``.

Both libraries are optional extras (``pip install archsearch[torchvision]``, ``archsearch[timm]``).
Nothing is downloaded: the weights come from ``--weights FILE`` or, without it, from the checkpoint
the library itself would use where its own cache already holds it (torch hub's for torchvision,
Hugging Face's or torch hub's for timm); the run says which file it read. Without either, the
network keeps its random initialisation, and says so. Input size and normalisation come from the
library's own metadata: torchvision's weight transforms, timm's pretrained config.
"""
from __future__ import annotations

import difflib
import os
import sys
import types
import warnings
from pathlib import Path
from types import ModuleType
from urllib.parse import urlparse

import torch
import torch.nn as nn

import backbones
from archsearch.errors import UserError
from archsearch.sources.models import SourceModel, parse_input_size
from archsearch.notes import note

ZOOS = ("torchvision", "timm")
_AUX = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}  # auxiliary heads, run in training only


def is_zoo_spec(spec: str | None) -> bool:
    """Whether ``spec`` names a zoo model (``torchvision:NAME`` or ``timm:NAME``)."""
    return bool(spec) and spec.partition(":")[0] in ZOOS and bool(spec.partition(":")[2])


def _missing(package: str) -> UserError:
    return UserError(f"--model {package}:NAME needs the {package} package; run `pip install archsearch[{package}]`")


def import_torchvision() -> ModuleType:
    """torchvision, also where its compiled operators do not load (a CUDA build of torchvision beside a
    CPU build of torch fails with ``operator torchvision::nms does not exist``): its model definitions are
    plain Python, so they are imported without the operators' registrations, and a note says so once."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchvision
        return torchvision
    except ImportError:
        raise _missing("torchvision") from None
    except RuntimeError as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torchvision
    note(f"torchvision {torchvision.__version__}'s compiled operators do not load beside torch {torch.__version__} "
         f"({reason}: a build for another torch or device); its model definitions need none of them, so "
         "archsearch uses those (install the torchvision build that matches your torch to have its operators)")
    return torchvision


def import_timm() -> ModuleType:
    """timm (which imports torchvision: see :func:`import_torchvision`)."""
    import_torchvision()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import timm
    except ImportError:
        raise _missing("timm") from None
    return timm


def _unknown(zoo: str, name: str, known: list[str]) -> UserError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(f'{zoo}:{c}' for c in close)}?" if close else ""
    return UserError(f"{zoo} has no classification model '{name}'{hint} ({len(known)} known; "
                     f"archsearch takes the names of {zoo}'s list_models())")


def _classes_in(state: dict[str, torch.Tensor], model: nn.Module) -> int | None:
    """The number of classes a state dict's classifier has, where it differs from ``model``'s: the
    first dimension of the keys whose first dimension in the model is its number of outputs."""
    target = model.state_dict()
    prefix = backbones.classifier_prefix(model)
    keys = [k for k in target if prefix and k.startswith(prefix)] or [k for k in target if k.startswith("classifier.")]
    sizes = {state[k].shape[0] for k in keys if k in state and state[k].ndim >= 1}
    return sizes.pop() if len(sizes) == 1 else None


def _cached(path: Path | str | None) -> Path | None:
    return Path(path) if isinstance(path, (str, Path)) and Path(path).is_file() else None


def _torch_hub_file(url: str | None) -> Path | None:
    """The file torch hub would have downloaded ``url`` to, where it is already there."""
    if not url:
        return None
    return _cached(Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path))


def _load(model_fn, name: str, weights: Path | None, trust_pickle: bool, **kwargs) -> nn.Module:
    """``model_fn(**kwargs)`` with ``weights`` loaded (strictly), its classifier sized to the file's."""
    model = model_fn(**kwargs)
    if weights is None:
        return model
    state = backbones.read_state_dict(weights, trust_pickle)
    classes = _classes_in(state, model)
    if classes is not None and classes != 1000:
        model = model_fn(**kwargs, num_classes=classes)
    model.backbone_name = name
    backbones.load_weights(model, weights, trust_pickle=trust_pickle)
    return model


def _torchvision(name: str, weights: Path | None, trust_pickle: bool) -> tuple[nn.Module, dict, Path | None]:
    tv = import_torchvision()
    known = tv.models.list_models(module=tv.models)
    if name not in known:
        raise _unknown("torchvision", name, known)
    entries = tv.models.get_model_weights(name)
    entry = next((w for w in entries if _torch_hub_file(w.url)), None) if weights is None else None
    file = weights or (_torch_hub_file(entry.url) if entry is not None else None)
    if entry is not None:
        note(f"torchvision:{name} reads torchvision's cached checkpoint {file} ({entry}); pass --weights FILE "
             "to use another")
    entry = entry or entries.DEFAULT
    transform = entry.transforms()
    meta = {"size": transform.crop_size[0], "mean": transform.mean, "std": transform.std}
    kwargs: dict = {}
    aux = _AUX.get(name, ())
    if aux:
        has_aux = file is not None and any(k.startswith(aux) for k in backbones.read_state_dict(file, trust_pickle))
        # torchvision's own pre-trained weights expect its input transform (as get_model(weights=...) sets)
        kwargs = {"aux_logits": has_aux, "init_weights": False, "transform_input": file is not None}
    model = _load(lambda **kw: tv.models.get_model(name, **kw), name, file, trust_pickle, **kwargs)
    for head in aux:  # run in training only, where they would be a second output: dropped, as torchvision does
        setattr(model, head, None)
    if aux:
        model.aux_logits = False
    return model, meta, file


def _timm_file(cfg: dict) -> Path | None:
    """The checkpoint timm would load for its pretrained config, where a cache already holds it."""
    repo = cfg.get("hf_hub_id")
    if repo:
        from huggingface_hub import try_to_load_from_cache
        filename = cfg.get("hf_hub_filename")
        for candidate in ([filename] if filename else ["model.safetensors", "pytorch_model.bin"]):
            found = _cached(try_to_load_from_cache(repo, candidate))
            if found is not None:
                return found
    return _torch_hub_file(cfg.get("url"))


def _timm(name: str, weights: Path | None, trust_pickle: bool) -> tuple[nn.Module, dict, Path | None]:
    timm = import_timm()
    if not timm.is_model(name):
        raise _unknown("timm", name, timm.list_models())
    probe = timm.create_model(name, pretrained=False)
    cfg = dict(probe.pretrained_cfg)
    file = weights or _timm_file(cfg)
    if weights is None and file is not None:
        note(f"timm:{name} reads timm's cached checkpoint {file}; pass --weights FILE to use another")
    model = probe if file is None else _load(lambda **kw: timm.create_model(name, **kw), name, file, trust_pickle)
    size = cfg.get("input_size", (3, 224, 224))
    meta = {"size": size[-1], "mean": cfg.get("mean", backbones.IMAGENET_MEAN), "std": cfg.get("std", backbones.IMAGENET_STD)}
    return model, meta, file


def zoo_model(spec: str, weights: str | None = None, input_size: str | None = None, *,
              trust_pickle: bool = False) -> SourceModel:
    """The network ``torchvision:NAME`` or ``timm:NAME`` with its input size and normalisation.

    ``weights`` (a PyTorch or ``.safetensors`` state dict) fills it, its classifier sized to the
    file's number of classes; without it, the library's cached checkpoint where there is one, else
    random weights (and a note). ``input_size`` ("C,H,W") overrides the library's input size."""
    zoo, _, name = spec.partition(":")
    if weights is not None and not Path(weights).exists():
        raise UserError(f"weights file {weights} does not exist")
    build = _torchvision if zoo == "torchvision" else _timm
    model, meta, file = build(name, Path(weights) if weights else None, trust_pickle)
    if file is None:
        note(f"{spec} has no --weights and no cached checkpoint: it starts from random weights (archsearch "
             "downloads nothing), which shows the mechanics, not a tailored network")
    shape = parse_input_size(input_size) or (3, int(meta["size"]), int(meta["size"]))
    return SourceModel(model, spec, shape, tuple(float(v) for v in meta["mean"]), tuple(float(v) for v in meta["std"]),
                       str(file) if file is not None else None)
