# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Device choice and data parallelism for sm_dream's lm-eval models.

lm-eval splits the documents itself when an `LM` reports `world_size > 1` (rank r takes documents
r, r + W, r + 2W, ...), pads the shorter ranks, gathers the scores to rank 0, and calls the
collectives defined here. Under `torchrun` or `accelerate launch` (both set RANK, WORLD_SIZE and
LOCAL_RANK) a process group is started with the global rank, so several nodes split the documents
correctly; on CPU it uses gloo (no Accelerate settings needed), on GPUs NCCL with one GPU per
local rank.
"""

import logging
import os

import torch
import torch.distributed as dist
from lm_eval.api.model import LM

logger = logging.getLogger(__name__)


def resolve_device(device, local_rank: int = 0) -> torch.device:
    """The torch device for `device` ("cuda", "cuda:N", "cpu", None): CUDA falls back to the CPU
    when none is available (lm-eval passes "cuda:0" by default); with several processes each takes
    the GPU of its local rank."""
    name = "cuda" if device is None else str(device)
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            logger.warning("device=%r was requested but CUDA is not available: running on the CPU.", name)
            return torch.device("cpu")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return torch.device("cuda", local_rank)
        return torch.device(name if ":" in name else "cuda:0")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"device={device!r} is not a torch device; use 'cuda', 'cuda:N' or 'cpu'.") from error


class DistributedLM(LM):
    """An `LM` whose rank, world size and collectives come from torch.distributed."""

    def __init__(self, device=None):
        super().__init__()
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self._device = resolve_device(device, local_rank)
        if world_size > 1:
            if not dist.is_initialized():
                backend = "nccl" if self._device.type == "cuda" else "gloo"
                if self._device.type == "cuda":
                    torch.cuda.set_device(self._device)
                dist.init_process_group(backend=backend)
            self._rank, self._world_size = dist.get_rank(), dist.get_world_size()
            logger.info("Data parallel: rank %d of %d on %s.", self._rank, self._world_size, self._device)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """The tensors of all ranks concatenated along dim 0 (0-d tensors become a (world,) tensor)."""
        if self.world_size == 1:
            return tensor
        tensor = tensor.reshape(1, *tensor.shape[1:]) if tensor.dim() == 0 else tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    def gather_object(self, obj, dst: int = 0):
        """The objects of all ranks, in rank order (every rank gets the list)."""
        if self.world_size == 1:
            return [obj]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()
