"""Many tasks on one device: load the universal blocks once and attach every task pack to them."""
from __future__ import annotations

import functools
import pickle
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from archsearch.errors import UserError
from archsearch.layout import layout_named
from archsearch.io.pack import (PACK_FORMAT, PACK_FORMAT_MODULE, UNIVERSAL_FORMAT, forward_namespace, tensor_digest,
                                unpack_tensors)


@dataclass
class Task:
    """One tailored task: its module (sharing universal blocks) and how to feed it."""

    name: str
    module: nn.Module
    classes: list[str]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    meta: dict = field(default_factory=dict)
    memory_format: torch.memory_format = torch.contiguous_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images; they are fed in the layout the task's code was emitted for."""
        return self.module(x.contiguous(memory_format=self.memory_format))


def _load(path: str | Path, formats: tuple[str, ...], what: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} '{p}' " + ("is a folder, not a file" if p.is_dir() else "does not exist"))
    try:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)  # data only: the common, fast case
        except pickle.UnpicklingError:
            obj = torch.load(p, map_location="cpu", weights_only=False)  # holds modules (universal.pt, pack/1)
    except Exception as exc:
        raise UserError(f"{what} '{p}' is not readable ({type(exc).__name__}); it may be truncated — "
                        "re-run the tailoring that wrote it") from exc
    if not isinstance(obj, dict) or obj.get("format") not in formats:
        raise UserError(f"'{p}' is not an archsearch {what} (expected format {formats[0]})")
    return obj


def load_universal(path: str | Path) -> nn.Module:
    """The shared pre-trained network, checked against the digest stored with it."""
    obj = _load(path, (UNIVERSAL_FORMAT,), "universal-blocks file")
    module = obj["module"].eval()
    if tensor_digest(module) != obj["sha256"]:
        raise UserError(f"'{path}' has been modified: its tensors no longer match the SHA-256 recorded in it")
    module.archsearch_sha256 = obj["sha256"]
    return module


def attach(universal: nn.Module, pack_path: str | Path) -> Task:
    """Attach one task pack to already-loaded universal blocks (the cheap task switch)."""
    pack = _load(pack_path, (PACK_FORMAT, PACK_FORMAT_MODULE), "task pack")
    if pack["universal_sha256"] != universal.archsearch_sha256:
        raise UserError(f"task pack '{pack_path}' was tailored against other universal blocks "
                        f"(sha256 {pack['universal_sha256'][:12]}…, these are {universal.archsearch_sha256[:12]}…); "
                        "load it with the universal.pt of its own backbone")
    if pack["format"] == PACK_FORMAT:
        module = _assemble(universal, pack)  # functional code on tensors: no training mode to set
    else:  # format 1: a stubbed module tree (a network whose code cannot be regenerated from tensors)
        module = pack["module"]
        for path in pack["universal_paths"]:
            module.set_submodule(path, universal.get_submodule(path))
        module.eval()
    layout = layout_named(pack.get("memory_format"), "cpu")
    return Task(pack.get("name", Path(pack_path).stem), module, list(pack["classes"]), tuple(pack["input_shape"]),
                tuple(pack["mean"]), tuple(pack["std"]), {k: pack[k] for k in ("report",) if k in pack}, layout)


@functools.lru_cache(maxsize=64)
def _compiled(source: str) -> types.CodeType:
    """Compiled forward source, kept so that switching back to a task does not compile again."""
    return compile(source, "<archsearch task pack>", "exec")


def _assemble(universal: nn.Module, pack: dict) -> nn.Module:
    """A module that runs the pack's forward code on its own tensors and the shared universal modules.

    Universal parts are grafted at the highest path that holds no task tensor (a whole ``layer1``
    at once), so the container stays small and the universal objects are the very same ones.
    """
    tensors = unpack_tensors(pack)
    reserved = {".".join(parts[:i]) for parts in (t.split(".") for t in tensors) for i in range(1, len(parts))}
    container = nn.Module()
    for path in list(pack["universal_paths"]) + list(pack.get("universal_attrs", ())):
        _graft(container, path, universal, reserved)
    for target, value in tensors.items():
        parent = _parent(container, target)
        parent.register_buffer(target.rpartition(".")[2], value)
    return _bind_forward(container, pack["forward_source"])


def _bind_forward(module: nn.Module, source: str) -> nn.Module:
    """Give ``module`` the pack's generated forward (its compiled form cached per process)."""
    namespace = forward_namespace()
    exec(_compiled(source), namespace)  # noqa: S102 - our own generated code
    module.forward = types.MethodType(namespace["forward"], module)
    return module


def _parent(container: nn.Module, target: str) -> nn.Module:
    node = container
    for part in target.split(".")[:-1]:
        child = node._modules.get(part)
        if child is None:
            child = nn.Module()
            node._modules[part] = child
        node = child
    return node


def _graft(container: nn.Module, path: str, universal: nn.Module, reserved: set[str]) -> None:
    parts = path.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if prefix in reserved:
            continue
        parent = _parent(container, prefix)
        obj: object = universal
        for part in parts[:i]:
            obj = getattr(obj, part)
        if isinstance(obj, nn.Module):
            parent._modules[parts[i - 1]] = obj
        elif isinstance(obj, nn.Parameter):
            parent.register_parameter(parts[i - 1], obj)
        else:
            parent.register_buffer(parts[i - 1], obj)
        return
    raise UserError(f"task pack: '{path}' is both a universal part and a task tensor's parent; re-run the tailoring")


def load_tasks(universal: str | Path | nn.Module, packs: list[str | Path]) -> list[Task]:
    """One module per task; all of them share the very same universal module objects."""
    shared = universal if isinstance(universal, nn.Module) else load_universal(universal)
    if isinstance(universal, nn.Module) and not hasattr(shared, "archsearch_sha256"):
        shared.archsearch_sha256 = tensor_digest(shared)
    tasks = [attach(shared, p) for p in packs]
    # Weights once in the maps' layout: channels-last unless a task needs NCHW (its network refused
    # channels-last, and it shares these blocks), whatever layout universal.pt was saved in.
    channels_last = bool(tasks) and all(t.memory_format == torch.channels_last for t in tasks)
    for t in tasks:
        t.module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return tasks
