"""Many tasks on one device: load the universal blocks once and attach every task pack to them.

Both files are data (:mod:`archsearch.io.pack`) and load with ``weights_only=True``: the universal
modules are rebuilt from an allowlist of ``torch.nn`` classes, and a task's forward is regenerated
by fx from its stored graph, every target resolved from an allowlist. Files in the pickled formats
(networks with a layer or a function of a user's own, or written by an older archsearch) are
refused unless ``trust_pickle=True`` (``--trust-pickle``).
"""
from __future__ import annotations

import functools
import pickle
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from archsearch.errors import UserError
from archsearch.io.pack import (PACK_FORMAT, PACK_FORMAT_CODE, PACK_FORMAT_MODULE, UNIVERSAL_FORMAT,
                                UNIVERSAL_FORMAT_PICKLED, NotData, build_module_from_spec, forward_namespace,
                                graph_from_data, tensor_digest, unpack_tensors)
from archsearch.platform.memory_format import layout_named
from backbones import TRUST_FLAG, pickle_reason

PICKLED_FORMATS = (UNIVERSAL_FORMAT_PICKLED, PACK_FORMAT_MODULE, PACK_FORMAT_CODE)


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


def _refused(p: Path, what: str, why: str) -> UserError:
    return UserError(f"{what} '{p}' {why}; reading it could run code, so it is refused: pass {TRUST_FLAG} "
                     "(trust_pickle=True) to read it anyway, only if you trust where it came from (archsearch "
                     "pickles only a network with a layer or function of its own; re-running an older run's "
                     "tailoring with --resume rewrites its files as data)")


def _load(path: str | Path, formats: tuple[str, ...], what: str, trust_pickle: bool) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} '{p}' " + ("is a folder, not a file" if p.is_dir() else "does not exist"))
    try:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)  # data only: what archsearch writes
        except pickle.UnpicklingError as exc:
            reason = pickle_reason(exc)
            if reason is None:
                raise
            if not trust_pickle:
                raise _refused(p, what, f"holds pickled Python objects ({reason})") from None
            obj = torch.load(p, map_location="cpu", weights_only=False)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{what} '{p}' is not readable ({type(exc).__name__}); it may be truncated — "
                        "re-run the tailoring that wrote it") from exc
    if not isinstance(obj, dict) or obj.get("format") not in formats:
        raise UserError(f"'{p}' is not an archsearch {what} (expected format {formats[0]})")
    if obj["format"] in PICKLED_FORMATS and not trust_pickle:
        why = ("holds Python code" if obj["format"] == PACK_FORMAT_CODE
               else f"holds a pickled module ({obj.get('pickled_because', 'an older archsearch wrote it')})")
        raise _refused(p, what, why)
    return obj


def load_universal(path: str | Path, *, trust_pickle: bool = False) -> nn.Module:
    """The shared pre-trained network's modules and tensors, checked against the digest stored with it."""
    obj = _load(path, (UNIVERSAL_FORMAT, UNIVERSAL_FORMAT_PICKLED), "universal-blocks file", trust_pickle)
    if obj["format"] == UNIVERSAL_FORMAT:
        try:
            module = _rebuild_universal(obj)
        except (NotData, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"'{path}' is not a readable universal-blocks file ({exc}); re-run the tailoring "
                            "that wrote it") from None
    else:
        module = obj["module"]
    module.eval()
    if tensor_digest(module) != obj["sha256"]:
        raise UserError(f"'{path}' has been modified: its tensors no longer match the SHA-256 recorded in it")
    module.archsearch_sha256 = obj["sha256"]
    return module


def _rebuild_universal(obj: dict) -> nn.Module:
    """A container of the universal network's modules at their paths, rebuilt from their classes and
    arguments, holding the file's tensors (nothing is unpickled, nothing but torch.nn layers is made)."""
    root = nn.Module()
    for path, spec in obj["modules"].items():
        if not isinstance(path, str) or not all(_valid_name(part) for part in path.split(".")):
            raise NotData(f"a module path {path!r}")
        parent = _parent(root, path)
        parent._modules[path.rpartition(".")[2]] = build_module_from_spec(spec)
    parameters = set(obj["parameters"])
    for name, tensor in obj["state"].items():
        _place(root, name, tensor, parameter=name in parameters)
    for name, tensor in obj["constants"].items():
        _place(root, name, tensor, parameter=False, persistent=False)
    return root


def _valid_name(part: str) -> bool:
    """A module or tensor name as torch gives them: an identifier, or a Sequential's index."""
    return part.isidentifier() or part.isdigit()


def _place(root: nn.Module, name: str, tensor: torch.Tensor, parameter: bool, persistent: bool = True) -> None:
    """Put one stored tensor at ``name``: into the rebuilt layer's own slot (same shape), or on a container."""
    if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
        raise NotData(f"a tensor entry {name!r}")
    parent, leaf = _parent(root, name), name.rpartition(".")[2]
    own = parent._parameters.get(leaf, parent._buffers.get(leaf))
    if leaf in parent._parameters or leaf in parent._buffers:
        if own is not None and own.shape != tensor.shape:
            raise NotData(f"'{name}' has shape {tuple(tensor.shape)}, its layer wants {tuple(own.shape)}")
        if leaf in parent._parameters:
            parent._parameters[leaf] = nn.Parameter(tensor, requires_grad=own.requires_grad if own is not None else True)
        else:
            parent._buffers[leaf] = tensor
    elif type(parent) is not nn.Module or not _valid_name(leaf) or hasattr(parent, leaf):
        raise NotData(f"'{name}' belongs to no tensor of its layer")
    elif parameter:
        parent.register_parameter(leaf, nn.Parameter(tensor))
    else:
        parent.register_buffer(leaf, tensor, persistent=persistent)


def attach(universal: nn.Module, pack_path: str | Path, *, trust_pickle: bool = False) -> Task:
    """Attach one task pack to already-loaded universal blocks (the cheap task switch)."""
    pack = _load(pack_path, (PACK_FORMAT, PACK_FORMAT_CODE, PACK_FORMAT_MODULE), "task pack", trust_pickle)
    if pack["universal_sha256"] != universal.archsearch_sha256:
        raise UserError(f"task pack '{pack_path}' was tailored against other universal blocks "
                        f"(sha256 {pack['universal_sha256'][:12]}…, these are {universal.archsearch_sha256[:12]}…); "
                        "load it with the universal.pt of its own backbone")
    if pack["format"] == PACK_FORMAT_MODULE:  # a stubbed module tree, pickled (trusted above)
        module = pack["module"]
        for path in pack["universal_paths"]:
            module.set_submodule(path, universal.get_submodule(path))
        module.eval()
    else:
        try:
            module = _assemble(universal, pack)  # functional code on tensors: no training mode to set
        except NotData as exc:
            raise UserError(f"task pack '{pack_path}' cannot be loaded: {exc}; re-run the tailoring that "
                            "wrote it") from None
    layout = layout_named(pack.get("memory_format"), "cpu")
    return Task(pack.get("name", Path(pack_path).stem), module, list(pack["classes"]), tuple(pack["input_shape"]),
                tuple(pack["mean"]), tuple(pack["std"]), {k: pack[k] for k in ("report",) if k in pack}, layout)


@functools.lru_cache(maxsize=64)
def _forward_from_graph(text: str, modules: frozenset[str], attrs: frozenset[str]) -> Callable:
    """The forward function fx generates from a stored graph (targets from the allowlist only),
    kept so that switching back to a task generates nothing again."""
    code = graph_from_data(text, set(modules), set(attrs)).python_code("self")
    namespace = dict(code.globals)
    exec(compile(code.src, "<archsearch task pack>", "exec"), namespace)  # noqa: S102 - fx's code of a checked graph
    return namespace["forward"]


@functools.lru_cache(maxsize=64)
def _compiled(source: str) -> types.CodeType:
    """A format-2 pack's stored source (trusted), compiled once."""
    return compile(source, "<archsearch task pack>", "exec")


def _assemble(universal: nn.Module, pack: dict) -> nn.Module:
    """A module that runs the pack's forward on its own tensors and the shared universal modules.

    Universal parts are grafted at the highest path that holds no task tensor (a whole ``layer1``
    at once), so the container stays small and the universal objects are the very same ones.
    """
    tensors = unpack_tensors(pack)
    reserved = {".".join(parts[:i]) for parts in (t.split(".") for t in tensors) for i in range(1, len(parts))}
    container = nn.Module()
    shared_attrs = list(pack.get("universal_attrs", ()))
    for path in list(pack["universal_paths"]) + shared_attrs:
        _graft(container, path, universal, reserved)
    for target, value in tensors.items():
        parent = _parent(container, target)
        parent.register_buffer(target.rpartition(".")[2], value)
    if pack["format"] == PACK_FORMAT:
        forward = _forward_from_graph(pack["graph"], frozenset(pack["universal_paths"]),
                                      frozenset(tensors) | frozenset(shared_attrs))
    else:  # format 2, trusted: its stored source
        namespace = forward_namespace()
        exec(_compiled(pack["forward_source"]), namespace)  # noqa: S102 - accepted with trust_pickle
        forward = namespace["forward"]
    container.forward = types.MethodType(forward, container)
    return container


def _parent(container: nn.Module, target: str) -> nn.Module:
    node = container
    for part in target.split(".")[:-1]:
        child = node._modules.get(part)
        if child is None:
            if part in node._parameters or part in node._buffers:
                raise NotData(f"'{target}' lies under a tensor")
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
        try:
            for part in parts[:i]:
                obj = getattr(obj, part)
        except AttributeError:
            raise NotData(f"it uses '{path}', which the universal network does not have") from None
        if isinstance(obj, nn.Module):
            parent._modules[parts[i - 1]] = obj
        elif isinstance(obj, nn.Parameter):
            parent.register_parameter(parts[i - 1], obj)
        elif isinstance(obj, torch.Tensor):
            parent.register_buffer(parts[i - 1], obj)
        else:
            raise NotData(f"it uses '{path}', which is no module or tensor of the universal network")
        return
    raise UserError(f"task pack: '{path}' is both a universal part and a task tensor's parent; re-run the tailoring")


def load_tasks(universal: str | Path | nn.Module, packs: list[str | Path], *, trust_pickle: bool = False) -> list[Task]:
    """One module per task; all of them share the very same universal module objects.

    ``trust_pickle=True`` also reads files in the pickled formats (see the module's docstring)."""
    shared = universal if isinstance(universal, nn.Module) else load_universal(universal, trust_pickle=trust_pickle)
    if isinstance(universal, nn.Module) and not hasattr(shared, "archsearch_sha256"):
        shared.archsearch_sha256 = tensor_digest(shared)
    tasks = [attach(shared, p, trust_pickle=trust_pickle) for p in packs]
    # Weights once in the maps' layout: channels-last unless a task needs NCHW (its network refused
    # channels-last, and it shares these blocks), whatever layout universal.pt was saved in.
    channels_last = bool(tasks) and all(t.memory_format == torch.channels_last for t in tasks)
    for t in tasks:
        t.module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return tasks
