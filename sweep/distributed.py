"""torch.distributed setup: from submitit's JobEnvironment, from torchrun's env vars, or single process.

gloo on CPU, nccl on CUDA. The global batch is split across ranks (rows rank::world_size), and DDP averages
the gradients, so a W-rank run computes the same update as a 1-rank run at the same global batch.
"""

from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _from_submitit() -> tuple[DistInfo, str, int] | None:
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks <= 1:
        return None
    # nodes x tasks_per_node tasks: global_rank over all of them, local_rank (the GPU) within a node; the
    # first node of the allocation hosts the rendezvous, which every task can name from SLURM_JOB_NODELIST
    master = env.hostnames[0] if env.hostnames else "127.0.0.1"
    # a port derived from the job id: tasks agree on it without talking, and concurrent jobs rarely collide
    port = 20000 + int("".join(ch for ch in str(env.job_id) if ch.isdigit()) or "0") % 20000
    return DistInfo(env.global_rank, env.num_tasks, env.local_rank), master, port


def _from_torchrun() -> tuple[DistInfo, str, int] | None:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    env = os.environ
    info = DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    return info, os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", "29500"))


def backend_for(device_type: str) -> str:
    """nccl between GPUs (within and across nodes), gloo between CPU processes."""
    return "nccl" if device_type == "cuda" else "gloo"


def init(device_type: str, timeout_s: float = 600.0) -> DistInfo:
    """Join the process group if this process is one of several tasks; otherwise a no-op. `timeout_s`:
    how long a collective waits for a peer (the others wait while rank 0 saves a checkpoint). The caller
    binds the GPU (sweep.train.cuda_index)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    found = _from_submitit() or _from_torchrun()
    if found is None:
        return DistInfo()
    info, master, port = found
    backend = backend_for(device_type)
    dist.init_process_group(backend, init_method=f"tcp://{master}:{port}", rank=info.rank,
                            world_size=info.world_size, timeout=datetime.timedelta(seconds=timeout_s))
    return info


def flag_group(info: DistInfo, device_type: str, timeout_s: float = 600.0) -> dist.ProcessGroup | None:
    """A gloo group beside NCCL's for per-step host flags (the stop signal): an all-reduce of a CPU tensor
    that never waits for the GPU's queue. None where the default group is gloo already or single process.
    Collective: every rank calls it."""
    if not info.enabled or device_type != "cuda":
        return None
    return dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))


def wrap(model: torch.nn.Module, device: torch.device, sync_buffers: bool = False) -> torch.nn.Module:
    """DDP around `model`, set for QAT.

    Buffers are not broadcast before each forward (``sync_buffers=False``; DDP's default is to). The
    quantizer's buffers need no such sync: every rank computes them from identical weights with the same
    seed (``centroids`` at the switch, ``ste_delta`` each step). The broadcast would copy the whole STE delta
    every step (4 B per quantized weight: 4.1 GB at l1b), and before torch 2.13 (which preserves version
    counters around it) the copy-back bumped ``centroids``' version, so every quantizer cache
    (sweep/quant.py, sweep/quant_batch.py) missed every step. ``gradient_as_bucket_view``: gradients are
    views of the all-reduce buckets, not a second copy (4 B per parameter: 4.6 GB at l1b)."""
    ddp = torch.nn.parallel.DistributedDataParallel
    # torch 2.13 renamed broadcast_buffers (deprecated, with a warning) to forward_sync_buffers
    renamed = "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
    flag = {"forward_sync_buffers" if renamed else "broadcast_buffers": sync_buffers}
    return ddp(model, device_ids=[device.index] if device.type == "cuda" else None,
               gradient_as_bucket_view=True, **flag)


def all_reduce_mean(value: float | torch.Tensor, info: DistInfo, device: torch.device) -> float:
    """The mean over ranks as a Python float. A tensor is read once, here: the loop calls this at log
    steps only, where one host-device sync per log step is the price of the number."""
    if not info.enabled:
        return float(value)
    t = torch.as_tensor(value, device=device).detach().double().reshape(1)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def any_rank(flag: bool, info: DistInfo, device: torch.device,
             group: dist.ProcessGroup | None = None) -> bool:
    """True on every rank if it is true on any (e.g. 'a stop signal arrived'), so all stop at one step.
    `group`: flag_group's gloo group (then `device` is the CPU)."""
    if not info.enabled:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return bool(t.item())


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The elementwise sum over ranks (in place), or the tensor itself in a single process."""
    if info.enabled:
        dist.all_reduce(tensor)
    return tensor


def shutdown(info: DistInfo, wait_for_peers: bool = True) -> None:
    """Tear down the process group. After a normal run every rank first waits for the others: rank 0
    exports and writes the run dir after the last step, and a rank that destroyed its gloo pairs meanwhile
    was seen to abort ("terminate called without an active exception")."""
    if info.enabled and dist.is_initialized():
        if wait_for_peers:
            dist.barrier()
        dist.destroy_process_group()
