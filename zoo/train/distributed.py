"""Data-parallel setup for training: the process group ``torchrun`` asks for, and the device to train on.

Launched by ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK in the environment) a run joins a process
group (gloo on CPU, nccl on CUDA); without those variables it is a single process and nothing here
touches ``torch.distributed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class DistributedState:
    """This process's place in the run: rank, number of processes, local GPU index."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: Whether this module created the process group (and so destroys it at the end).
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and validates."""
        return self.rank == 0


def init_distributed(device_request: str) -> DistributedState:
    """Join the process group described by the environment (a single process when WORLD_SIZE <= 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedState()
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    owns = False
    if not dist.is_initialized():
        use_cuda = device_request != "cpu" and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
        owns = True
    return DistributedState(dist.get_rank(), dist.get_world_size(), local_rank, owns)


def close_distributed(state: DistributedState) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if state.owns_group:
        import torch.distributed as dist

        dist.destroy_process_group()


def pick_device(request: str, state: DistributedState, say) -> torch.device:
    """The device for ``train.device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``); falls back to the CPU.

    ``say(message)`` reports a fallback; under DDP each process takes the GPU of its local rank.
    """
    if request == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if request != "auto":
            say(f"train.device is {request} but CUDA is not available: training on the CPU instead")
        return torch.device("cpu")
    if state.active:
        return torch.device("cuda", state.local_rank)
    return torch.device(request if request != "auto" else "cuda")
