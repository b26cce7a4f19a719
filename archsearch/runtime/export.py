"""``archsearch export``: a finished run's tailored network as ONNX or as a torch.export program.

The network is the run's own (read from its task pack and universal blocks, which are data; from
``tailored.pt`` only with ``trust_pickle``), traced by ``torch.export`` at the run's input shape
(report.json's ``input_shape``) with a dynamic batch dimension:

- ``pt2``: the ``torch.export.ExportedProgram``, saved with ``torch.export.save``; load it with
  ``torch.export.load(path).module()``, torch only.
- ``onnx``: the same program through torch's ONNX exporter (``torch.onnx.export(..., dynamo=True)``,
  the exporter that keeps the batch dynamic for this code: the older TorchScript exporter bakes the
  example's batch into its reshapes), opset 18, standard ``ai.onnx`` operators only; input
  ``images`` (N, C, H, W), output ``logits`` (N, classes). It needs the optional packages ``onnx``
  and ``onnxscript`` (``pip install archsearch[export]``, with ``onnxruntime`` to run the file).

Each file is written atomically (a temporary file in the same folder, then a rename).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import warnings
from pathlib import Path

import torch

from archsearch.runtime.compare import load_run
from archsearch.errors import UserError
from archsearch.io.atomic import atomic_write_with, check_writable

FORMATS = ("onnx", "pt2")
OPSET = 18
EXTRA = "pip install archsearch[export]"
ONNX_PACKAGES = ("onnx", "onnxscript")  # what torch's ONNX exporter imports
EXAMPLE_BATCH = 2  # traced with two images: a batch of one would be taken for a constant


def missing_onnx_packages() -> list[str]:
    """The packages the ONNX export needs that this Python lacks."""
    return [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]


def batch_dim() -> torch.export.Dim:
    """The dynamic batch dimension of every exported program."""
    return torch.export.Dim("batch", min=1, max=1 << 16)


def export_program(net: torch.nn.Module, input_shape: tuple[int, ...]) -> torch.export.ExportedProgram:
    """``net`` (eval mode, CPU) as a torch.export program whose batch dimension is dynamic."""
    example = torch.randn(EXAMPLE_BATCH, *input_shape)
    with torch.no_grad():
        return torch.export.export(net, (example,), dynamic_shapes=({0: batch_dim()},))


def onnx_model_bytes(net: torch.nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """``net`` as a serialised ONNX model (opset :data:`OPSET`, dynamic batch)."""
    missing = missing_onnx_packages()
    if missing:
        raise UserError(f"exporting to ONNX needs the package{'s' if len(missing) > 1 else ''} "
                        f"{' and '.join(missing)}, which this Python lacks: {EXTRA}")
    example = torch.randn(EXAMPLE_BATCH, *input_shape)
    quiet = io.StringIO()  # the exporter prints its progress; the command's output is the file's path
    with contextlib.redirect_stdout(quiet), warnings.catch_warnings(), _quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")
        with torch.no_grad():
            program = torch.onnx.export(net, (example,), dynamo=True, opset_version=OPSET,
                                        input_names=["images"], output_names=["logits"],
                                        dynamic_shapes=({0: batch_dim()},), verbose=False)
    return program.model_proto.SerializeToString()


@contextlib.contextmanager
def _quiet_logger(name: str):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _own_storage(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` with every tensor in storage of its own: a task pack's tensors are views of one buffer,
    which torch.export.save would otherwise store as one tensor per group (and warn)."""
    for module in net.modules():
        for slots in (module._parameters, module._buffers):
            for name, t in slots.items():
                if t is not None and t.untyped_storage().nbytes() != t.numel() * t.element_size():
                    slots[name] = torch.nn.Parameter(t.detach().clone(), t.requires_grad) if isinstance(
                        t, torch.nn.Parameter) else t.clone()
    return net


def export(run: Path, fmt: str, output: Path | None = None, trust_pickle: bool = False) -> Path:
    """Write run ``run``'s tailored network as ``fmt`` (onnx or pt2) to ``output`` (default
    ``RUN/tailored.<fmt>``); returns the path written."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}'; choose {' or '.join(FORMATS)}")
    if fmt == "onnx" and missing_onnx_packages():  # before any loading: say it at once
        onnx_model_bytes(torch.nn.Identity(), ())
    report, net = load_run(Path(run), trust_pickle)
    target = check_writable(output if output is not None else Path(run) / f"tailored.{fmt}")
    shape = tuple(int(v) for v in report["input_shape"])
    net = _own_storage(net.to("cpu").eval())
    try:
        if fmt == "pt2":
            program = export_program(net, shape)
            with warnings.catch_warnings():  # said of every channels-last weight, harmless on the CPU
                warnings.filterwarnings("ignore", message="No complete tensor found")
                atomic_write_with(target, lambda f: torch.export.save(program, f))
        else:
            data = onnx_model_bytes(net, shape)
            atomic_write_with(target, lambda f: f.write(data))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - an exporter's failure on a user's network: one line, with its cause
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"the {fmt} export of '{run}' failed ({type(exc).__name__}: {first})") from exc
    return target
