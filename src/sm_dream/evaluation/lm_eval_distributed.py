# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Device choice and data parallelism for sm_dream's lm-eval models, on Accelerate's state (as lm-eval's
`hf` model does).

lm-eval splits the documents itself when an `LM` reports `world_size > 1` (rank r takes documents
r, r + W, r + 2W, ...), pads the shorter ranks, gathers the scores to rank 0, and calls the
collectives defined here. Under `torchrun` or `accelerate launch` (both set RANK, WORLD_SIZE and
LOCAL_RANK) `accelerate.PartialState` starts the process group and gives the global rank, so several
nodes split the documents correctly; on CPU it uses gloo, on GPUs NCCL with one GPU per local rank.
"""

import logging
import os

import torch
from accelerate import PartialState
from accelerate.utils import gather, gather_object
from lm_eval.api.model import LM

logger = logging.getLogger(__name__)


def resolve_device(device) -> torch.device:
    """The torch device for `device` ("cuda", "cuda:N", "cpu", None): CUDA falls back to the CPU
    when none is available (lm-eval passes "cuda:0" by default)."""
    name = "cuda" if device is None else str(device)
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            logger.warning("device=%r was requested but CUDA is not available: running on the CPU.", name)
            return torch.device("cpu")
        return torch.device(name if ":" in name else "cuda:0")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"device={device!r} is not a torch device; use 'cuda', 'cuda:N' or 'cpu'.") from error


class DistributedLM(LM):
    """An `LM` whose rank, world size, device (with several processes: the local rank's GPU) and
    collectives come from Accelerate's process state."""

    def __init__(self, device=None):
        super().__init__()
        self._device = resolve_device(device)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            state = PartialState(cpu=self._device.type == "cpu")
            self._device, self._rank, self._world_size = state.device, state.process_index, state.num_processes
            logger.info("Data parallel: rank %d of %d on %s.", self._rank, self._world_size, self._device)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """The tensors of all ranks concatenated along dim 0 (0-d tensors become a (world,) tensor)."""
        return gather(tensor) if self.world_size > 1 else tensor

    def gather_object(self, obj, dst: int = 0):
        """The objects of all ranks, in rank order (every rank gets the list)."""
        return gather_object([obj]) if self.world_size > 1 else [obj]

    def barrier(self) -> None:
        if self.world_size > 1:
            PartialState().wait_for_everyone()
