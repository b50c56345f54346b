"""The four-model run under torchrun: the teachers spread over the ranks, the student on rank 0.

Rank r trains the teachers i (0..2, from --start on) with i % world_size == r and writes them to disk as a
sequential run does; a barrier waits for all of them; rank 0 gathers their distill.json entries and trains
the student from the teachers' PLYs (the path --start 3 takes); the other ranks stop after the barrier.
Every collective runs under the process group's timeout (--dist_timeout_minutes), so a failed rank makes
the others stop with a one-line error instead of waiting forever.
"""
import datetime
import os
from dataclasses import dataclass

import torch

from utils.errors import UserError

# a hook for tests only: the rank named here fails before it trains its teachers
FAIL_RANK_ENV = "DISTILLED3DGS_TEST_FAIL_RANK"


class DistributedFailure(UserError):
    """Another rank failed or did not reach a barrier within --dist_timeout_minutes (one line, exit 2)."""


@dataclass
class DistContext:
    rank: int
    world_size: int
    backend: str
    timeout: datetime.timedelta

    def trains(self, index):
        """Whether this rank trains model ``index`` (teachers round-robin, the student on rank 0)."""
        return self.rank == 0 if index == 3 else index % self.world_size == self.rank


def launched_distributed():
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(timeout_minutes):
    """Under torchrun (WORLD_SIZE > 1): join the process group (nccl with one GPU per rank, else gloo) and
    return its DistContext; otherwise None (a plain run uses no process group)."""
    if not launched_distributed():
        return None
    import torch.distributed as dist
    if not timeout_minutes > 0:
        raise UserError(f"--dist_timeout_minutes {timeout_minutes} must be > 0")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "gloo"
    if torch.cuda.is_available() and local < torch.cuda.device_count():
        torch.cuda.set_device(local)  # "cuda" means cuda:LOCAL_RANK from here on
        backend = "nccl"
    timeout = datetime.timedelta(minutes=timeout_minutes)
    dist.init_process_group(backend, timeout=timeout)
    return DistContext(rank, world, backend, timeout)


def _failed(ctx, what, exc):
    first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
    return DistributedFailure(f"rank {ctx.rank}/{ctx.world_size}: {what} failed: another rank stopped or did not "
                              f"arrive within --dist_timeout_minutes {ctx.timeout.total_seconds() / 60:g} "
                              f"({exc.__class__.__name__}: {first[:200]})")


def barrier(ctx, what):
    """Wait for every rank, at most the timeout; a failure is a one-line DistributedFailure."""
    import torch.distributed as dist
    try:
        if ctx.backend == "gloo":
            dist.monitored_barrier(timeout=ctx.timeout, wait_all_ranks=True)
        else:
            dist.barrier()
    except Exception as exc:  # noqa: BLE001 (gloo/nccl raise RuntimeError subclasses of several kinds)
        raise _failed(ctx, what, exc) from None


def gather_to_rank0(ctx, obj, what):
    """``obj`` of every rank, in rank order, on rank 0 (None on the others)."""
    import torch.distributed as dist
    out = [None] * ctx.world_size
    try:
        dist.all_gather_object(out, obj)
    except Exception as exc:  # noqa: BLE001
        raise _failed(ctx, what, exc) from None
    return out if ctx.rank == 0 else None


def test_fail_hook(ctx):
    if os.environ.get(FAIL_RANK_ENV) == str(ctx.rank):
        raise UserError(f"rank {ctx.rank}: failing on purpose ({FAIL_RANK_ENV}={ctx.rank}, a test hook)")


def close(ctx):
    if ctx is not None:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()
