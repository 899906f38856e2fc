"""Training on several processes (`torchrun --nproc_per_node=N main.py -c=NAME`):
DistributedDataParallel over NCCL (GPUs) or gloo (CPU). Every rank reads its own share of the
deterministic sample order, so N processes see the batches one process would, and `--resume`
continues exactly; gradients are averaged; only rank 0 validates, logs and writes checkpoints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from pea.errors import PEAInputError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (torchrun's environment)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them; one process otherwise."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def start(w: World, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on the CPU); on CUDA each rank takes the GPU
    of its local rank. Returns the device this rank trains on."""
    if w.size == 1:
        return device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", w.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def stop(w: World) -> None:
    if w.size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def wrap(model: torch.nn.Module, w: World, device: torch.device, sync_bn: bool) -> torch.nn.Module:
    """The model as DistributedDataParallel (with SyncBatchNorm on CUDA when asked)."""
    if w.size == 1:
        return model
    if sync_bn and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def batch_sizes(batch: int, scope: str, w: World) -> tuple[int, int]:
    """(per-process, global) batch from TRAIN.batch_size and TRAIN.batch_scope."""
    if scope == "per_process":
        return batch, batch * w.size
    if batch % w.size:
        raise PEAInputError(f"TRAIN.batch_size = {batch} (global) does not split over {w.size} processes; "
                            f"use a multiple of {w.size} or TRAIN.batch_scope: per_process")
    return batch // w.size, batch


def sample_indices(first: int, last: int, per_process: int, total: int, w: World) -> list[int]:
    """This rank's sample indices for iterations first..last-1: iteration i's batch is samples
    i * total ... i * total + total - 1, of which rank r reads its consecutive share."""
    return [i * total + w.rank * per_process + j for i in range(first, last) for j in range(per_process)]
