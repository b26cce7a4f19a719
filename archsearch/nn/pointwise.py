"""A slim node's sum of 1x1 products over channels-last maps, in one pass: a compiled kernel, with a
torch fallback that computes the same sum.

A tailored node's input is ``bias + start + sum_s W_s x_s`` (``start``: the kept universal block's
output, if any; each ``W_s x_s`` a proxy's last 1x1 convolution), usually followed by a ReLU. As one
matrix product per proxy (MKL), each product reads and writes the whole sum and the ReLU is one more
pass: at 16–64 channels these memory-bound products were half of a lean network's time on CPU, at
about 60–70 % of the rate the original network's convolutions reach (docs/results.md). The kernel
(``pointwise_sum.cpp``) keeps each output row in vector registers while it reads every source's row
once, and writes the sum once, rectified.

It is C++, compiled on first use with ``torch.utils.cpp_extension`` (gcc, about 30 s, once per
machine: cached under torch's extension folder, named for the source, its flags, the CPU and torch). Where it
cannot be built or does not apply (another device or dtype, autocast, a gradient wanted, output
channels that are not a multiple of 16 up to 128), the sum runs as torch operations, the products
accumulated in place into the sum. ``ARCHSEARCH_KERNELS=0`` turns the kernel off.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F

KERNELS_ENV = "ARCHSEARCH_KERNELS"  # "0": never build or use the compiled kernel
_SOURCE = Path(__file__).with_name("pointwise_sum.cpp")
_FLAGS = "-O3 -march=native -fopenmp"  # OpenMP: at::parallel_for is inline, serial without it
_STALE_LOCK_SECONDS = 600  # a build takes about 30 s


def _cpu_signature() -> str:
    """What ``-march=native`` compiles for: a build is never loaded on a CPU it was not made for."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    keys = ("model name", "flags", "Features", "CPU part")
    return platform.machine() + "|" + "|".join(sorted({ln for ln in lines if ln.split(":")[0].strip() in keys}))


def kernel_name() -> str:
    """The extension's name: a digest of its source, its flags, the CPU and the torch version."""
    h = hashlib.sha256(_SOURCE.read_bytes() + _FLAGS.encode())
    h.update(_cpu_signature().encode())
    h.update(torch.__version__.encode())
    return "archsearch_pointwise_" + h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def kernel() -> ModuleType | None:
    """The compiled kernel, built on first call; None where it is turned off or cannot be built."""
    if os.environ.get(KERNELS_ENV, "1") == "0":
        return None
    from torch.utils import cpp_extension

    name = kernel_name()
    _clear_stale_lock(name)
    if not _built(name):
        print("archsearch: compiling the fused proxy kernel (once per machine, about 30 s; "
              f"{KERNELS_ENV}=0 skips it)", file=sys.stderr, flush=True)
    path = os.environ.get("PATH", "")
    if shutil.which("ninja") is None:  # pip put ninja beside this Python, in a folder that may not be on PATH
        os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), path])
    try:
        return cpp_extension.load(name, [str(_SOURCE)], extra_cflags=_FLAGS.split(),
                                  extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as err:  # no compiler, no Python headers, an unknown -march: run the torch form
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        warnings.warn(f"archsearch: the fused proxy kernel could not be built ({first}); tailored networks "
                      "run their proxies as matrix products, correct but slower", RuntimeWarning, stacklevel=2)
        return None
    finally:
        os.environ["PATH"] = path


def _build_folder(name: str) -> Path | None:
    """Where torch builds and caches the extension ``name``; None for a torch that lays it out otherwise."""
    from torch.utils import cpp_extension

    try:
        return Path(cpp_extension._get_build_directory(name, verbose=False))
    except (AttributeError, OSError):
        return None


def _clear_stale_lock(name: str) -> None:
    """Remove a build lock left by a killed build: torch's lock has no timeout, every later build would wait."""
    folder = _build_folder(name)
    lock = folder / "lock" if folder is not None else None
    try:
        if lock is not None and time.time() - lock.stat().st_mtime > _STALE_LOCK_SECONDS:
            lock.unlink()
    except OSError:  # no lock, or another process removed it first
        pass


def _built(name: str) -> bool:
    """Whether torch's extension folder already holds this build (then loading it takes milliseconds)."""
    folder = _build_folder(name)
    return folder is None or (folder / f"{name}.so").exists()  # unknown layout: say nothing


def _rows(x: torch.Tensor) -> torch.Tensor:
    """A (N, C, H, W) map's (pixels x channels) rows: a view of a channels-last map."""
    return torch.flatten(torch.permute(x, (0, 2, 3, 1)), 0, 2)


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch before 2.4
        return torch.is_autocast_cpu_enabled()


def _gradient_wanted(tensors: Sequence[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def pointwise_sum(start: torch.Tensor | None, rows: list[torch.Tensor], weights: list[torch.Tensor],
                  bias: torch.Tensor, out_hw: tuple[int, int], relu: bool = False) -> torch.Tensor:
    """``act(bias + start + sum_s rows_s @ weights_s)`` as a channels-last ``(N, C, H, W)`` map.

    ``start``: None or a ``(N, C, H, W)`` map in any layout; ``rows``: per source its map's
    (pixels x channels) rows, ``weights``: per source its ``(channels in, C)`` matrix; ``bias``:
    ``(C,)``; ``out_hw``: the output's (H, W); ``relu``: rectify the sum. The result is a new tensor.
    """
    tensors = [t for t in (bias, start, *rows, *weights) if t is not None]
    proxy = next((t for t in tensors if isinstance(t, fx.Proxy)), None)
    if proxy is not None:  # fx tracing code that calls it (torch.load of a GraphModule retraces): a leaf
        return proxy.tracer.create_proxy("call_function", pointwise_sum, (start, rows, weights, bias, out_hw, relu), {})
    ext = kernel() if bias.device.type == "cpu" and bias.dtype == torch.float32 else None  # never built for a GPU
    if ext is not None and not _cpu_autocast() and not _gradient_wanted(tensors):
        out = ext.pointwise_sum(start, rows, weights, bias, out_hw, relu)  # None: the kernel does not apply
        if out is not None:
            return out
    if start is None:  # oneDNN's 1x1 convolution with the bias starts the sum (faster than a product from it)
        first = torch.permute(rows[0].reshape(-1, *out_hw, rows[0].shape[1]), (0, 3, 1, 2))
        acc = F.conv2d(first, weights[0].t()[:, :, None, None], bias)
        rows, weights = rows[1:], weights[1:]
    else:
        acc = start + bias.type_as(start)[:, None, None]
    acc = acc.contiguous(memory_format=torch.channels_last)
    sums = _rows(acc)  # a view: each product lands in acc
    for r, w in zip(rows, weights):  # type_as: under autocast the sum is in the lower precision
        sums.addmm_(r.type_as(acc), w.type_as(acc))
    return torch.relu_(acc) if relu else acc
