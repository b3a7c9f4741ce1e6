"""Distributed helpers of ``g2g train`` (torchrun sets WORLD_SIZE/RANK/LOCAL_RANK) and the device choice."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from g2g.runtime import parse_device
from g2g.train import TrainError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """--device for this rank: ``auto`` is ``cuda:<local_rank>`` when torch sees a GPU, else the CPU; plain
    ``cuda`` is ``cuda:<local_rank>``. A TrainError when CUDA is asked for and torch has none."""
    kind, index = parse_device(name)  # DeviceError (one line) for a string that is not a device
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if kind == "auto":
            return torch.device("cpu")
        raise TrainError(f"--device {name}: torch sees no CUDA GPU (use --device cpu or auto)")
    return torch.device(f"cuda:{index if ':' in str(name) else local_rank}")


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_dist(device_name: str) -> tuple[Dist, torch.device]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; one process otherwise. gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), resolve_device(device_name)
    import torch.distributed as dist

    d = Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world)
    device = resolve_device(device_name, d.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return d, device


def _all_mean(values: list[float], d: Dist, device: torch.device) -> list[float]:
    if d.world <= 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / d.world).tolist()


def _any_flag(flag: bool, d: Dist, device: torch.device) -> bool:
    if d.world <= 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
