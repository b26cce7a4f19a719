"""Many tasks on one device: load the universal blocks once and attach every task pack to them."""
from __future__ import annotations

import functools
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from archsearch.errors import UserError
from archsearch.io.pack import PACK_FORMAT, UNIVERSAL_FORMAT, forward_namespace, tensor_digest


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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def _load(path: str | Path, fmt: str, what: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} '{p}' does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UserError(f"{what} '{p}' is not readable ({type(exc).__name__}); it may be truncated — "
                        "re-run the tailoring that wrote it") from exc
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise UserError(f"'{p}' is not an archsearch {what} (expected format {fmt})")
    return obj


def load_universal(path: str | Path) -> nn.Module:
    """The shared pre-trained network, checked against the digest stored with it."""
    obj = _load(path, UNIVERSAL_FORMAT, "universal-blocks file")
    module = obj["module"].eval()
    if tensor_digest(module) != obj["sha256"]:
        raise UserError(f"'{path}' has been modified: its tensors no longer match the SHA-256 recorded in it")
    module.archsearch_sha256 = obj["sha256"]
    return module


def attach(universal: nn.Module, pack_path: str | Path) -> Task:
    """Attach one task pack to already-loaded universal blocks (the cheap task switch)."""
    pack = _load(pack_path, PACK_FORMAT, "task pack")
    if pack["universal_sha256"] != universal.archsearch_sha256:
        raise UserError(f"task pack '{pack_path}' was tailored against other universal blocks "
                        f"(sha256 {pack['universal_sha256'][:12]}…, these are {universal.archsearch_sha256[:12]}…); "
                        "load it with the universal.pt of its own backbone")
    module = pack["module"] if "module" in pack else _with_forward(pack["modules"], pack["forward_source"])
    for path in pack["universal_paths"]:
        module.set_submodule(path, universal.get_submodule(path))
    module.eval()
    return Task(pack.get("name", Path(pack_path).stem), module, list(pack["classes"]), tuple(pack["input_shape"]),
                tuple(pack["mean"]), tuple(pack["std"]), {k: pack[k] for k in ("report",) if k in pack})


@functools.lru_cache(maxsize=64)
def _compiled(source: str) -> types.CodeType:
    """Compiled forward source, kept so that switching back to a task does not compile again."""
    return compile(source, "<archsearch task pack>", "exec")


def _with_forward(container: nn.Module, source: str) -> nn.Module:
    """Give a plain module the tailored network's generated forward (exec of the fx source)."""
    namespace = forward_namespace()
    exec(_compiled(source), namespace)  # noqa: S102 - our own generated code
    container.forward = types.MethodType(namespace["forward"], container)
    return container


def load_tasks(universal: str | Path | nn.Module, packs: list[str | Path]) -> list[Task]:
    """One module per task; all of them share the very same universal module objects."""
    shared = universal if isinstance(universal, nn.Module) else load_universal(universal)
    if isinstance(universal, nn.Module) and not hasattr(shared, "archsearch_sha256"):
        shared.archsearch_sha256 = tensor_digest(shared)
    return [attach(shared, p) for p in packs]
