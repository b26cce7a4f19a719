"""Task packs and the shared universal blocks, stored as data: tensors, plain values and graphs.

``universal.pt`` holds the frozen pre-trained network once (its task classifier left out): every
module the network calls as its ``torch.nn`` class name and constructor arguments, its tensors, and
the SHA-256 of those tensors. ``task.pack`` holds a task: its tensors (folded proxies, gate-folded
biases, classifier) in one buffer, the tailored network's fx graph as JSON (each node's op, its
target as a qualified name, its arguments with node references encoded), which universal modules
and tensors it uses, the classes, the preprocessing and the digest of the universal tensors it was
tailored against. Neither file holds code or a pickled object: both load with
``torch.load(..., weights_only=True)``, and :mod:`archsearch.runtime.tasks` rebuilds the modules from an
allowlist of ``torch.nn`` classes and regenerates the forward from the graph, resolving its targets
only from an allowlist (torch operations, ``torch.nn.functional``, ``operator``, Tensor methods;
``call_module`` only on the universal modules, ``get_attr`` only on the pack's and the universal
network's tensors). A pack loads in a few milliseconds and shares the very same universal module
objects with every other task.

A network that cannot be written so (a module class outside ``torch.nn``, a function of the
user's own in its graph) gets the pickled formats, universal/1 and task-pack/1, with the reason
recorded; loading those runs pickle and needs ``trust_pickle=True`` (``--trust-pickle``).
"""
from __future__ import annotations

import builtins
import copy
import hashlib
import inspect
import json
import math
import operator
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch.fx import _pytree as fx_pytree

from archsearch.io.atomic import atomic_torch_save

UNIVERSAL_FORMAT = "archsearch-universal/2"  # modules as data: class names, constructor arguments, tensors
UNIVERSAL_FORMAT_PICKLED = "archsearch-universal/1"  # the traced network, pickled
PACK_FORMAT = "archsearch-task-pack/3"  # the graph as data
PACK_FORMAT_CODE = "archsearch-task-pack/2"  # generated Python source (archsearch before packs were data)
PACK_FORMAT_MODULE = "archsearch-task-pack/1"  # the tailored module tree, pickled


class NotData(ValueError):
    """A network part that has no data form here (the message says which and why)."""


class Stub(nn.Module):
    """Placeholder for a universal submodule inside a pickled task pack; must be replaced before use."""

    def forward(self, *args: object) -> None:
        raise RuntimeError("this task pack is not attached to its universal blocks; use archsearch.load_tasks")


def tensor_digest(module: nn.Module, skip: tuple[str, ...] = ()) -> str:
    """SHA-256 over names and bytes of every parameter and buffer (minus ``skip`` prefixes)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        if skip and (name + ".").startswith(skip):
            continue
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# What a stored graph may name


_TORCH_DENIED = {"from_file"}  # reads a file: no operation of a network
_TORCH_OPS = (set(dir(torch._C._VariableFunctions)) | set(torch.functional.__all__)) - _TORCH_DENIED
_OPERATORS = {
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "neg", "pos", "abs", "invert", "not_",
    "and_", "or_", "xor", "lshift", "rshift", "eq", "ne", "lt", "le", "gt", "ge", "getitem", "setitem",
    "iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow", "imatmul", "iand", "ior", "ixor", "truth",
    "contains", "index",
}
# builtins.getattr: fx records ``x.shape`` as getattr(x, "shape"); only these tensor attributes
_GETATTR_NAMES = {"shape", "dtype", "device", "ndim", "T", "mT", "H", "mH", "real", "imag", "is_cuda", "layout",
                  "requires_grad", "data", "is_sparse", "is_quantized"}
# Tensor methods that take callables, hooks or storages: no operation of a network
_METHODS_DENIED = {"apply_", "map_", "map2_", "register_hook", "register_post_accumulate_grad_hook", "backward",
                   "share_memory_", "storage", "untyped_storage", "set_", "pin_memory", "numpy", "tolist",
                   "cuda", "to_sparse", "retain_grad"}
_METHODS = {n for n in dir(torch.Tensor) if not n.startswith("_") and callable(getattr(torch.Tensor, n, None))}
_METHODS -= _METHODS_DENIED
# torch.nn classes that hold other modules or wrap callables: never rebuilt from data
_MODULES_DENIED = {"Module", "Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict",
                   "DataParallel", "Container", "Transformer", "TransformerEncoder", "TransformerDecoder",
                   "TransformerEncoderLayer", "TransformerDecoderLayer"}


def _functional(name: str) -> bool:
    obj = getattr(F, name, None)
    if name.startswith("_") or obj is None:
        return False
    if inspect.isfunction(obj):
        return obj.__module__ == "torch.nn.functional"
    return isinstance(obj, type(torch.relu))  # torch's C++ operators exposed there (conv2d, avg_pool2d, ...)


_FUNCTIONAL = {n for n in dir(F) if _functional(n)}


def resolve_function(qualname: str) -> object:
    """The callable a stored graph names as ``qualname``, from the allowlist only; NotData otherwise."""
    prefix, _, name = str(qualname).rpartition(".")
    if not name.startswith("_"):
        if prefix == "torch" and name in _TORCH_OPS:
            return getattr(torch, name)
        if prefix == "torch.nn.functional" and name in _FUNCTIONAL:
            return getattr(F, name)
        if prefix == "operator" and name in _OPERATORS:
            return getattr(operator, name)
        if prefix == "builtins" and name == "getattr":
            return builtins.getattr
    raise NotData(f"'{qualname}' is not a torch operation, a torch.nn.functional function or an operator")


def function_name(fn: object) -> str:
    """The qualified name under which :func:`resolve_function` finds ``fn``; NotData where none does."""
    name = getattr(fn, "__name__", None)
    for prefix, namespace in (("torch", torch), ("torch.nn.functional", F), ("operator", operator),
                              ("builtins", builtins)):
        if isinstance(name, str) and getattr(namespace, name, None) is fn:
            try:
                if resolve_function(f"{prefix}.{name}") is fn:
                    return f"{prefix}.{name}"
            except NotData:
                pass
    where = getattr(fn, "__module__", None) or type(fn).__name__
    raise NotData(f"its graph calls {where}.{name or fn!r}, which is not a torch operation, a "
                  "torch.nn.functional function or an operator")


def check_method(name: str) -> str:
    if not isinstance(name, str) or name not in _METHODS:
        raise NotData(f"'{name}' is not a Tensor method a stored graph may call")
    return name


def resolve_module_class(qualname: str) -> type[nn.Module]:
    """A ``torch.nn`` module class named ``torch.nn.NAME``, from the allowlist only; NotData otherwise."""
    prefix, _, name = str(qualname).rpartition(".")
    cls = getattr(nn, name, None) if prefix == "torch.nn" and not name.startswith("_") else None
    if (not isinstance(cls, type) or not issubclass(cls, nn.Module) or name in _MODULES_DENIED
            or name.startswith("Lazy") or not cls.__module__.startswith("torch.nn.modules.")):
        raise NotData(f"'{qualname}' is not a torch.nn layer class archsearch rebuilds from data")
    return cls


# ---------------------------------------------------------------------------------------------
# Values: plain JSON, every other kind a one-key object


def encode_value(value: Any, node_names: dict[fx.Node, str] | None = None) -> Any:
    """``value`` (an fx argument or a constructor argument) as JSON data; NotData for anything else."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, fx.Node):
        if node_names is None or value not in node_names:
            raise NotData("a node reference outside its graph")
        return {"node": node_names[value]}
    if isinstance(value, tuple) and not hasattr(value, "_fields"):  # torch.Size too; no named tuples
        return {"tuple": [encode_value(v, node_names) for v in value]}
    if isinstance(value, list):
        return {"list": [encode_value(v, node_names) for v in value]}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise NotData("a dict with keys other than strings")
        return {"dict": [[k, encode_value(v, node_names)] for k, v in value.items()]}
    if isinstance(value, slice):
        return {"slice": [encode_value(v, node_names) for v in (value.start, value.stop, value.step)]}
    if value is Ellipsis:
        return {"ellipsis": None}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    raise NotData(f"a constant of type {type(value).__name__}")


def _torch_attr(name: Any, kind: type) -> Any:
    obj = getattr(torch, name, None) if isinstance(name, str) and not name.startswith("_") else None
    if not isinstance(obj, kind):
        raise NotData(f"'{name}' is not a torch {kind.__name__}")
    return obj


def decode_value(data: Any, nodes: dict[str, fx.Node] | None = None) -> Any:
    """Inverse of :func:`encode_value`; NotData for anything it does not know."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, dict) and len(data) == 1:
        (tag, body), = data.items()
        if tag == "node":
            if nodes is None or body not in nodes:
                raise NotData(f"a reference to node {body!r}, which comes later or not at all")
            return nodes[body]
        if tag == "tuple" and isinstance(body, list):
            return tuple(decode_value(v, nodes) for v in body)
        if tag == "list" and isinstance(body, list):
            return [decode_value(v, nodes) for v in body]
        if tag == "dict" and isinstance(body, list) and all(isinstance(p, list) and len(p) == 2 for p in body):
            return {_string(k): decode_value(v, nodes) for k, v in body}
        if tag == "slice" and isinstance(body, list) and len(body) == 3:
            return slice(*(decode_value(v, nodes) for v in body))
        if tag == "ellipsis":
            return Ellipsis
        if tag == "dtype":
            return _torch_attr(body, torch.dtype)
        if tag == "memory_format":
            return _torch_attr(body, torch.memory_format)
        if tag == "device" and isinstance(body, str):
            return torch.device(body)
    raise NotData(f"an argument it cannot read ({str(data)[:60]})")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise NotData(f"{value!r} where a name belongs")
    return value


# ---------------------------------------------------------------------------------------------
# Graphs


def graph_to_data(graph: fx.Graph) -> str:
    """The graph as JSON text: one entry per node (name, op, target, args, kwargs); NotData where a
    target has no allowlisted name (the graph calls a user's function, say)."""
    names = {n: n.name for n in graph.nodes}
    out = []
    for n in graph.nodes:
        if n.op == "call_function":
            target = function_name(n.target)
        elif n.op == "call_method":
            target = check_method(n.target)
        else:
            target = str(n.target)
        out.append({"name": n.name, "op": n.op, "target": target, "args": encode_value(tuple(n.args), names),
                    "kwargs": encode_value(dict(n.kwargs), names)})
    text = json.dumps({"nodes": out}, separators=(",", ":"))
    # What is stored must give back the same code, or it is not stored so.
    again = graph_from_data(text, None, None).python_code("self").src
    if again != graph.python_code("self").src:
        raise NotData("its graph does not survive being written as data")
    return text


def graph_from_data(text: str, modules: set[str] | None, attrs: set[str] | None) -> fx.Graph:
    """An fx graph from :func:`graph_to_data`'s text, every target resolved from the allowlist:
    ``call_module`` only on ``modules``, ``get_attr`` only on ``attrs`` (None: not checked, for the
    writer's own round trip). NotData, naming the node, for anything else."""
    try:
        data = json.loads(text)
        entries = data["nodes"]
        assert isinstance(entries, list)
    except (ValueError, TypeError, KeyError, AssertionError):
        raise NotData("its graph is not the JSON archsearch writes") from None
    graph = fx.Graph()
    nodes: dict[str, fx.Node] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise NotData("its graph is not the JSON archsearch writes")
        name, op, target = entry.get("name"), entry.get("op"), entry.get("target")
        if not isinstance(name, str) or not name.isidentifier() or name in nodes:
            raise NotData(f"a node named {name!r}")
        try:
            args = decode_value(entry.get("args"), nodes)
            kwargs = decode_value(entry.get("kwargs"), nodes)
            if not isinstance(args, tuple) or not isinstance(kwargs, dict):
                raise NotData("arguments that are not a tuple and a dict")
            if op == "placeholder":
                if not isinstance(target, str) or not target.isidentifier():
                    raise NotData(f"an input named {target!r}")
            elif op == "call_function":
                target = resolve_function(target)
                if target is builtins.getattr and not (len(args) == 2 and args[1] in _GETATTR_NAMES and not kwargs):
                    raise NotData(f"getattr of {args[1:]!r}, not a tensor attribute")
            elif op == "call_method":
                check_method(target)
                if not args or not isinstance(args[0], fx.Node):
                    raise NotData(f"a method '{target}' called on a constant")
            elif op == "call_module":
                if modules is not None and target not in modules:
                    raise NotData(f"module '{target}', which is not one of the universal network's")
            elif op == "get_attr":
                if attrs is not None and target not in attrs:
                    raise NotData(f"tensor '{target}', which is neither the pack's nor the universal network's")
            elif op == "output":
                if len(args) != 1:
                    raise NotData("an output of other than one value")
            else:
                raise NotData(f"an operation of kind {op!r}")
        except NotData as exc:
            raise NotData(f"node '{name}': {exc}") from None
        nodes[name] = graph.create_node(op, target, args, kwargs, name=name)
    if not entries or entries[-1].get("op") != "output":
        raise NotData("its graph has no output")
    graph.lint()
    return graph


# ---------------------------------------------------------------------------------------------
# Modules of the universal network


def module_spec(module: nn.Module) -> list:
    """``[class name, constructor arguments]`` that rebuild ``module`` (its tensors come apart), checked by
    rebuilding it; NotData where its class is not a torch.nn layer or its settings are not all read back."""
    cls = type(module)
    qualname = f"torch.nn.{cls.__name__}"
    try:
        if resolve_module_class(qualname) is not cls:
            raise NotData("")
    except NotData:
        raise NotData(f"it calls a {cls.__module__}.{cls.__qualname__}, which is not a torch.nn layer") from None
    kwargs: dict[str, Any] = {}
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in ("device", "dtype"):
            continue
        if hasattr(module, p.name):
            value = getattr(module, p.name)
            if isinstance(p.default, bool) and (value is None or isinstance(value, torch.Tensor)):
                value = value is not None  # bias=True/False: the parameter itself comes with the tensors
            elif isinstance(value, torch.Tensor):
                raise NotData(f"its {cls.__name__} keeps '{p.name}' as a tensor")
            kwargs[p.name] = value
        elif p.default is p.empty:
            raise NotData(f"its {cls.__name__} does not keep its argument '{p.name}'")
    spec = [qualname, encode_value(kwargs)]
    rebuilt = build_module_from_spec(spec)
    same = (rebuilt.extra_repr() == module.extra_repr()
            and {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in module.state_dict().items()}
            and all(vars(rebuilt).get(k) == v for k, v in vars(module).items()
                    if k != "training" and isinstance(v, (bool, int, float, str, tuple, type(None)))))
    if not same:
        raise NotData(f"its {cls.__name__} has settings its constructor arguments do not give back")
    return spec


def build_module_from_spec(spec: Any) -> nn.Module:
    """A ``torch.nn`` layer from :func:`module_spec`'s data (allowlisted class, plain arguments)."""
    if not isinstance(spec, list) or len(spec) != 2:
        raise NotData("a module entry that is not [class, arguments]")
    cls = resolve_module_class(spec[0])
    kwargs = decode_value(spec[1])
    if not isinstance(kwargs, dict):
        raise NotData("module arguments that are not a dict")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise NotData(f"{spec[0]} refuses its arguments ({exc})") from None


def _attr(module: nn.Module, path: str) -> object:
    obj: object = module
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _universal_data(gm: fx.GraphModule, classifier: str) -> dict:
    """The universal network as data (modules, tensors); NotData where it has none."""
    skip = classifier + "."
    called = sorted({str(n.target) for n in gm.graph.nodes if n.op == "call_module"
                     and not (str(n.target) + ".").startswith(skip)})
    modules = {}
    for path in called:
        try:
            modules[path] = module_spec(gm.get_submodule(path))
        except NotData as exc:
            raise NotData(f"'{path}': {exc}") from None
    state = {k: v.detach() for k, v in gm.state_dict().items() if not (k + ".").startswith(skip)}
    parameters = sorted(k for k, _ in gm.named_parameters() if k in state)
    constants = {}
    for n in gm.graph.nodes:  # tensors the graph reads that are no parameter or buffer (fx's constants)
        if n.op == "get_attr" and str(n.target) not in state and not (str(n.target) + ".").startswith(skip):
            value = _attr(gm, str(n.target))
            if not isinstance(value, torch.Tensor):
                raise NotData(f"it reads '{n.target}', a {type(value).__name__}, not a tensor")
            constants[str(n.target)] = value.detach()
    return {"modules": modules, "state": state, "parameters": parameters, "constants": constants}


def write_universal(gm: fx.GraphModule, classifier: str, path: Path) -> str:
    """Save the shared pre-trained network once, as data where it can be; returns the SHA-256 of its tensors."""
    digest = tensor_digest(gm, skip=(classifier + ".",))
    try:
        body = {"format": UNIVERSAL_FORMAT, **_universal_data(gm, classifier)}
    except NotData as exc:
        body = {"format": UNIVERSAL_FORMAT_PICKLED, "module": _stub_out(gm, [classifier]), "pickled_because": str(exc)}
    atomic_torch_save({**body, "sha256": digest}, path)
    return digest


def _stub_out(module: nn.Module, paths: list[str]) -> nn.Module:
    """Shallow structural copy of ``module`` whose ``paths`` are stubs (no tensors are copied twice)."""
    shell = copy.copy(module)
    shell._modules = dict(module._modules)
    for path in paths:
        parent_path, _, leaf = path.rpartition(".")
        parent = shell
        if parent_path:
            for part in parent_path.split("."):
                child = copy.copy(parent._modules[part])
                child._modules = dict(child._modules)
                parent._modules[part] = child
                parent = child
        parent._modules[leaf] = Stub()
    return shell


# ---------------------------------------------------------------------------------------------
# Task packs


def universal_paths(tailored: fx.GraphModule, universal: nn.Module) -> list[str]:
    """Module paths the tailored network shares with the universal network (same objects)."""
    shared = {id(m): name for name, m in universal.named_modules() if name}
    return sorted({str(n.target) for n in tailored.graph.nodes
                   if n.op == "call_module" and shared.get(id(tailored.get_submodule(n.target))) == n.target})


def forward_namespace() -> dict:
    """The globals fx-generated code of a slim network may use: torch and fx's own helpers, nothing
    of archsearch (the names a regenerated forward runs with)."""
    return {"torch": torch, "inf": math.inf, "nan": math.nan, "NoneType": type(None), "device": torch.device,
            "fx_pytree": fx_pytree, "pytree": pytree}


def universal_attrs(tailored: fx.GraphModule, universal: nn.Module) -> list[str]:
    """Tensor attributes the tailored code reads that are the universal network's own tensors."""
    out = []
    for n in tailored.graph.nodes:
        if n.op != "get_attr":
            continue
        try:
            mine, theirs = _attr(tailored, n.target), _attr(universal, n.target)
        except AttributeError:
            continue
        if mine is theirs:
            out.append(str(n.target))
    return sorted(set(out))


def _flat_task_tensors(tailored: fx.GraphModule, shared_attrs: list[str]) -> tuple[dict[str, torch.Tensor], fx.Graph]:
    """The task's tensors under flat attribute names, and the graph that reads them so.

    Flat names let the runtime hang every task tensor on one container instead of building a tree
    of nn.Modules (each costs tens of microseconds, and a task switch would pay for all of them).
    """
    graph = copy.deepcopy(tailored.graph)
    tensors: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    for n in graph.nodes:
        if n.op != "get_attr" or n.target in shared_attrs:
            continue
        if n.target not in names:
            flat = "task_" + str(n.target).replace(".", "_")
            while flat in tensors:
                flat += "_"
            names[n.target] = flat
            tensors[flat] = _attr(tailored, n.target).detach()
        n.target = names[n.target]
    return tensors, graph


def pack_tensors(tensors: dict[str, torch.Tensor]) -> dict:
    """Task tensors as one flat buffer plus an index (name, shape, offset) when they share a dtype.

    Unpickling cost grows with the number of tensors (``weights_only`` loading rebuilds each one in
    Python), and a task switch is mostly that cost; one buffer makes it a few hundred microseconds.
    """
    if len({t.dtype for t in tensors.values()}) != 1:
        return {"tensors": {k: t.clone() for k, t in tensors.items()}}
    index, offset = [], 0
    for name, t in tensors.items():
        index.append([name, list(t.shape), offset])
        offset += t.numel()
    data = torch.cat([t.reshape(-1) for t in tensors.values()]) if tensors else torch.zeros(0)
    return {"tensor_data": data, "tensor_index": index}


def unpack_tensors(pack: dict) -> dict[str, torch.Tensor]:
    """The task tensors of a pack, as views of its one buffer (see :func:`pack_tensors`)."""
    if "tensors" in pack:
        return pack["tensors"]
    data = pack["tensor_data"]
    out = {}
    for name, shape, offset in pack["tensor_index"]:
        numel = math.prod(shape)
        out[name] = data[offset:offset + numel].view(shape)
    return out


def write_pack(tailored: fx.GraphModule, universal: nn.Module, classifier: str, universal_sha256: str,
               path: Path, meta: dict) -> int:
    """Save a task pack (the tailored network minus its universal blocks); returns its size in bytes."""
    paths = [p for p in universal_paths(tailored, universal) if not (p + ".").startswith(classifier + ".")]
    shared_attrs = [a for a in universal_attrs(tailored, universal) if not (a + ".").startswith(classifier + ".")]
    own_modules = sorted({str(n.target) for n in tailored.graph.nodes if n.op == "call_module"} - set(paths))
    try:
        if own_modules:
            raise NotData(f"it calls its own module '{own_modules[0]}'")
        tensors, graph = _flat_task_tensors(tailored, shared_attrs)
        body = {"format": PACK_FORMAT, **pack_tensors(tensors), "graph": graph_to_data(graph),
                "universal_attrs": shared_attrs}
    except NotData as exc:
        body = {"format": PACK_FORMAT_MODULE, "module": _stub_out(tailored, paths), "pickled_because": str(exc)}
    atomic_torch_save({**body, "universal_paths": paths, "universal_sha256": universal_sha256, **meta}, path)
    return path.stat().st_size
