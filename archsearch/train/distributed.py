"""Running under torchrun: process group, DDP wrapping, sharded evaluation, rank-0-only writes.

Nothing here starts processes: ``torchrun --nproc-per-node N -m archsearch tailor …`` does, and sets
the environment this module reads. Without torchrun (or with one process) everything is a no-op,
so a single process behaves exactly as it does without torchrun.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether several processes train together (launched by torchrun)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files and logs (rank 0)."""
        return self.rank == 0


SINGLE = Dist()


def init_from_env(device: str) -> Dist:
    """Join the torchrun job described by the environment (gloo on CPU, NCCL on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
    return Dist(rank, world, local)


def device_for(d: Dist, device: str) -> str:
    """``cuda`` becomes this rank's own GPU."""
    return f"cuda:{d.local_rank}" if device.startswith("cuda") and d.enabled else device


def wrap(d: Dist, module: nn.Module) -> nn.Module:
    """DDP over a module's trainable parameters (gradients averaged, so gates stay in sync)."""
    if not d.enabled or not any(p.requires_grad for p in module.parameters()):
        return module
    return DistributedDataParallel(module)


def all_reduce_sum(d: Dist, values: list[float], device: str = "cpu") -> list[float]:
    """Sum numbers over all ranks (every rank gets the total); ``device`` must suit the backend
    (this rank's GPU under NCCL)."""
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast(d: Dist, obj: Any) -> Any:
    """Rank 0's value of ``obj`` on every rank."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(d: Dist, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    """Wait for every process (a no-op alone), e.g. until rank 0 has written a checkpoint."""
    if d.enabled:
        dist.barrier()


def shutdown(d: Dist) -> None:
    """Leave the process group, if one was joined, so torchrun's processes exit cleanly."""
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
