"""One optimizer step's pieces and one evaluation, as the loop (sweep/loop.py) runs them: forward/backward
over micro-batches, the sharded validation pass, and the host copy of a state for a branch's snapshot."""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Any

import torch
import torch.nn.functional as F

from sweep import data, distributed


@torch.no_grad()
def evaluate(model: torch.nn.Module, val: tuple[torch.Tensor, torch.Tensor], device: torch.device,
             autocast: Any, batch: int, dist: distributed.DistInfo | None = None) -> tuple[float, float]:
    """(mean loss per token, its standard error over the validation sequences).

    Under DDP each rank evaluates every world_size-th batch of `batch` sequences (the same batches as one
    process would, so each sequence's loss has the same bits) and the per-sequence losses are summed into
    one zero-filled vector of the whole set (x + 0 = x exactly): every rank then reduces the same vector in
    the same order as a single process, and the mean is the unsharded one bit for bit.
    """
    dist = dist or distributed.DistInfo()
    model.eval()
    inputs, targets = val
    starts = list(range(0, len(inputs), batch))
    per_sequence = torch.zeros(len(inputs), dtype=torch.float64, device=device)
    for start in starts[dist.rank::dist.world_size]:
        x = data.to_device(inputs[start: start + batch], device)
        y = data.to_device(targets[start: start + batch], device)
        with autocast():
            logits = model(x)  # (b, T, vocab)
        losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
        del logits
        per_sequence[start: start + len(x)] = losses.view(len(x), -1).mean(dim=1).double()  # (b,)
    model.train()
    values = distributed.all_reduce_sum(per_sequence, dist).cpu()
    se = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), se


def forward_backward(trainable: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, micro: int,
                     autocast: Any, chunked_loss: bool = False) -> torch.Tensor:
    """Accumulate the gradient of the mean loss over this rank's batch, `micro` sequences at a time.

    DDP all-reduces only on the last micro-batch (``no_sync`` before), once per optimizer step. Returns the
    batch loss as a 0-d tensor on the device: reading it is a host-device sync, left to the log steps.
    `chunked_loss` (CUDA): the model computes head + loss in chunks (sweep.model.linear_cross_entropy), so
    no fp32 logits of a whole micro-batch exist; off (CPU): the whole micro-batch's logits, whose loss has
    the bits CPU runs always had (the chunked sum rounds differently, within float32 rounding).
    """
    # x, y: (B_local, T)
    starts = list(range(0, len(x), micro))
    total = torch.zeros((), device=x.device)
    for index, start in enumerate(starts):
        xb, yb = x[start: start + micro], y[start: start + micro]
        last = index == len(starts) - 1
        sync = contextlib.nullcontext() if last or not hasattr(trainable, "no_sync") else trainable.no_sync()
        with sync:
            if chunked_loss:
                with autocast():
                    loss = trainable(xb, yb) * (len(xb) / len(x))
            else:
                with autocast():
                    logits = trainable(xb)  # (b, T, vocab)
                loss = F.cross_entropy(logits.float().flatten(0, 1), yb.flatten()) * (len(xb) / len(x))
                del logits  # not alive into the next micro-batch's forward
            loss.backward()
        total += loss.detach()
    return total


def host_copy(state: Any) -> Any:
    """A copy of a (nested) state dict with every tensor copied to host memory: the branch's trunk snapshot
    costs no device memory (it was a device deepcopy, +12 B per parameter on every rank), and saving it
    reads host memory. Never an alias of the live tensors (AdamW updates those in place)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: host_copy(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(host_copy(value) for value in state)
    return copy.deepcopy(state)
