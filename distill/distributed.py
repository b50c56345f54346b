"""Runs under torchrun: the process group, and every collective wrapped in a one-line error.

The four-model run: the teachers (0..2, from --start on) go round-robin to the ranks, one rank each, and those
of a last, partial round (the third of three on two ranks) train data-parallel on every rank when that is shorter
(DistContext.teacher_ranks); they are written to disk as a sequential run writes them; a barrier waits for all of
them; rank 0 gathers their distill.json entries; then every rank trains the student from the teachers' PLYs (the
path --start 3 takes), data-parallel (training/data_parallel.py), as they train the one model of --num_models 1;
with one view per step rank 0 trains it alone and the others end there.
Every collective runs under the process group's timeout (--dist_timeout_minutes), so a failed rank makes
the others stop with a one-line error instead of waiting forever.
"""
import datetime
import math
import os
from dataclasses import dataclass

import torch

from utils.errors import UserError

# hooks for tests only: the rank named here fails before it trains its teachers, or, with FAIL_STEP_ENV, at that
# data-parallel step (1 = the first step of the student or of --num_models 1)
FAIL_RANK_ENV = "DISTILLED3DGS_TEST_FAIL_RANK"
FAIL_STEP_ENV = "DISTILLED3DGS_TEST_FAIL_STEP"


class DistributedFailure(UserError):
    """Another rank failed or did not reach a barrier within --dist_timeout_minutes (one line, exit 2)."""


@dataclass
class DistContext:
    rank: int
    world_size: int
    backend: str
    timeout: datetime.timedelta

    def teacher_ranks(self, first, views_per_step):
        """{teacher index: the ranks that train it} for the teachers first..2: one rank each, round-robin, except
        the teachers of a last, partial round (three on two ranks: the third), which train data-parallel on every
        rank, one after the other, when that is shorter: each rank then renders ceil(V / W) of a step's V views
        (--views_per_step), so r such teachers take r x ceil(V / W) / V of a stage instead of one (two GPUs, V = 6:
        the third teacher in half a stage; with one view per step never). The student trains on every rank
        (data_parallel.start), or on rank 0 alone with one view per step: then G_std, the one teacher the student
        needs from its start, trains on rank 0 and the others round-robin on the other ranks, so that rank 0's
        student starts while they train (run_distillation)."""
        from training.data_parallel import on_rank0_alone  # noqa: PLC0415 (data_parallel imports this module)
        teachers = list(range(first, 3))
        if on_rank0_alone(views_per_step) and self.world_size > 1 and 2 in teachers:
            others = [i for i in teachers if i != 2]
            return {**{i: (1 + k % (self.world_size - 1),) for k, i in enumerate(others)}, 2: (0,)}
        rest = len(teachers) % self.world_size
        if rest and rest * math.ceil(views_per_step / self.world_size) >= views_per_step:
            rest = 0  # (a round of their own is as short)
        plan = {i: (k % self.world_size,) for k, i in enumerate(teachers[:len(teachers) - rest])}
        plan.update({i: tuple(range(self.world_size)) for i in teachers[len(teachers) - rest:]})
        return plan

    @property
    def is_writer(self):
        """Rank 0 writes the files of what every rank trains together (the student, a --num_models 1 model)."""
        return self.rank == 0


def launched_distributed():
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(timeout_minutes):
    """Under torchrun (WORLD_SIZE > 1): join the process group (nccl with one GPU per rank, gloo on the CPU) and
    return its DistContext; otherwise None (a plain run uses no process group)."""
    if not launched_distributed():
        return None
    import torch.distributed as dist
    if not timeout_minutes > 0:
        raise UserError(f"--dist_timeout_minutes {timeout_minutes} must be > 0")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "gloo"
    if torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        if local >= gpus:  # (a rank sharing a GPU could not use NCCL, and every rank must use the same backend)
            raise UserError(f"torchrun started local rank {local} but this machine has {gpus} GPU(s): pass "
                            f"--nproc_per_node {gpus} or less")
        torch.cuda.set_device(local)  # "cuda" means cuda:LOCAL_RANK from here on
        backend = "nccl"
    timeout = datetime.timedelta(minutes=timeout_minutes)
    # NCCL bound to this rank's GPU (without device_id it guesses the GPU from the rank and warns that a guess
    # can hang where ranks and GPUs do not line up; gloo on the CPU takes none)
    device = {"device_id": torch.device("cuda", local)} if backend == "nccl" else {}
    dist.init_process_group(backend, timeout=timeout, **device)
    return DistContext(rank, world, backend, timeout)


def _failed(ctx, what, exc):
    first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
    return DistributedFailure(f"rank {ctx.rank}/{ctx.world_size}: {what} failed: another rank stopped or did not "
                              f"arrive within --dist_timeout_minutes {ctx.timeout.total_seconds() / 60:g} "
                              f"({exc.__class__.__name__}: {first[:200]})")


def _collective(ctx, what, call, *args, **kwargs):
    """``call(*args, **kwargs)`` (a torch.distributed collective); a failure is a one-line DistributedFailure."""
    try:
        return call(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 (gloo/nccl raise RuntimeError subclasses of several kinds)
        raise _failed(ctx, what, exc) from None


def barrier(ctx, what):
    """Wait for every rank, at most the timeout; a failure is a one-line DistributedFailure."""
    import torch.distributed as dist
    if ctx.backend == "gloo":
        _collective(ctx, what, dist.monitored_barrier, timeout=ctx.timeout, wait_all_ranks=True)
    else:
        _collective(ctx, what, dist.barrier)


def gather_to_rank0(ctx, obj, what):
    """``obj`` of every rank, in rank order, on rank 0 (None on the others)."""
    import torch.distributed as dist
    out = [None] * ctx.world_size
    _collective(ctx, what, dist.all_gather_object, out, obj)
    return out if ctx.rank == 0 else None


def all_reduce_sum(ctx, tensor, what):
    """Sum ``tensor`` over the ranks, in place (every rank receives the same values)."""
    import torch.distributed as dist
    _collective(ctx, what, dist.all_reduce, tensor, op=dist.ReduceOp.SUM)


def broadcast_from_rank0(ctx, tensors, what):
    """Rank 0's ``tensors`` on every rank, the others' replaced in place (same shapes and dtypes everywhere)."""
    import torch.distributed as dist
    for t in tensors:
        _collective(ctx, what, dist.broadcast, t, src=0)


def broadcast_object_from_rank0(ctx, obj, what):
    """Rank 0's ``obj`` (picklable) on every rank."""
    import torch.distributed as dist
    box = [obj]
    _collective(ctx, what, dist.broadcast_object_list, box, src=0)
    return box[0]


def test_fail_hook(ctx, step=None):
    """Fail this rank if the test hook names it: before its teachers (``step`` None) or at data-parallel ``step``."""
    if os.environ.get(FAIL_RANK_ENV) != str(ctx.rank):
        return
    at = os.environ.get(FAIL_STEP_ENV)
    if (step is None and at is None) or (step is not None and at == str(step)):
        where = "" if step is None else f" at data-parallel step {step}"
        raise UserError(f"rank {ctx.rank}: failing on purpose{where} ({FAIL_RANK_ENV}={ctx.rank}, a test hook)")


def close(ctx):
    if ctx is not None:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()
