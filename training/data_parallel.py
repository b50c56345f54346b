"""One model trained data-parallel over the ranks of a torchrun launch (the student, or --num_models 1).

Every rank holds the same parameters (rank 0's, broadcast before training) and draws the same random numbers,
so it pops the same views in the same order. Of a step's views j = 0..V-1 (--views_per_step V) rank r renders
those with j % W == r and backpropagates their losses with the weights of a one-process run; then one all-reduce
(SUM) of one flat buffer gives every rank:
- the gradients of all V views (and of the once-per-step loss, which rank 0 alone adds),
- the step's loss, the Gaussians visible in any of its views (sparse_adam),
- the densification inputs of the step's last view, which the strategy reads after the optimizer step (view-space
  gradients and screen radii: its renderer contributes them, every other rank zeros, so the sum is exact),
- the strategy's per-view masks (the student's blur split), OR-ed.
The statistics are then updated alike on every rank, so every densification and prune decision, and the random
positions of split children, are the same everywhere, and a checkpoint holds the whole state. Importance scores
split the views over the ranks and sum the parts (``share`` / ``sum_``). Only rank 0 writes files.
"""
import torch

from distill import distributed
from scene.gaussian_model import PARAM_NAMES


class _Grad:
    """Stands in for the render output's viewspace_points: only its ``grad`` is read by the statistics."""

    def __init__(self, grad):
        self.grad = grad


class StepSync:
    """What train_model calls under data parallelism (``sync``): which views to render, the per-step reduction,
    and which rank writes. ``ctx``: the distributed.DistContext."""

    def __init__(self, ctx, views_per_step):
        self.ctx, self.rank, self.world = ctx, ctx.rank, ctx.world_size
        self.views = views_per_step
        self.steps = 0  # data-parallel steps so far (the test hook's clock)

    @property
    def is_writer(self):
        """The rank that writes the files, prints, and adds the once-per-step loss (structure loss) to its
        gradients (the DistContext's writer)."""
        return self.ctx.is_writer

    def renders(self, j):
        """Whether this rank renders view ``j`` (0..V-1) of a step."""
        return j % self.world == self.rank

    def share(self, items):
        """This rank's part of ``items`` (for work split over the ranks and summed with ``sum_``)."""
        return items[self.rank::self.world]

    def summed(self, tensors, what):
        """The sums over the ranks of float ``tensors``, in one all-reduce of one flat buffer (new tensors of the
        same shapes)."""
        flat = torch.cat([t.reshape(-1) for t in tensors])
        distributed.all_reduce_sum(self.ctx, flat, what)
        return [part.view(t.shape) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]

    def sum_(self, tensors, what):
        """Sum float ``tensors`` over the ranks in place, in one all-reduce."""
        for t, total in zip(tensors, self.summed(tensors, what)):
            t.copy_(total)

    def broadcast(self, tensors, what):
        """Rank 0's ``tensors`` on every rank (new tensors; the shapes may differ between the ranks)."""
        shapes = distributed.broadcast_object_from_rank0(self.ctx, [tuple(t.shape) for t in tensors],
                                                         f"{what} (the sizes)")
        values = [t.contiguous() if tuple(t.shape) == s else torch.empty(s, dtype=t.dtype, device=t.device)
                  for t, s in zip(tensors, shapes)]
        distributed.broadcast_from_rank0(self.ctx, values, what)
        return values

    def broadcast_model(self, model):
        """Give every rank rank 0's parameters (a model made alike on every rank can still differ: GPU importance
        sums, kNN); before the optimizer exists."""
        assert model.optimizer is None, "broadcast the parameters before training_setup"
        model._set(*self.broadcast([model.params[k].detach() for k in PARAM_NAMES], "broadcasting the model's "
                                   "parameters"))

    def reduce_step(self, model, stats, step_loss, visible, out):
        """After the step's backward passes, before the optimizer step: sum everything the step's views gave on
        each rank (see the module's docstring). ``out``: the render output of this rank's last view (None if it
        rendered none). Returns (step_loss, visible, stats_out): the step's summed loss, the Gaussians visible in
        any view, and the last view's densification inputs as a render output for the strategy. ``stats``: the
        strategy state the loop holds (its boolean rows are OR-ed in place)."""
        self.steps += 1
        distributed.test_fail_hook(self.ctx, self.steps)
        n, dev = model.num_points, model.device
        last = out if self.renders(self.views - 1) else None
        masks = _per_view_masks(stats, model.num_points)
        zeros = lambda *shape: torch.zeros(*shape, device=dev)  # noqa: E731
        # (an empty parameter, f_rest of SH degree 0, gets no gradient from the renderer: it keeps none here too)
        names = [k for k in PARAM_NAMES if model.params[k].numel() > 0]
        grads = [model.params[k].grad if model.params[k].grad is not None else zeros(model.params[k].shape)
                 for k in names]
        view_grad = last["viewspace_points"].grad if last is not None else None
        parts = grads + [view_grad if view_grad is not None else zeros(n, 3),
                         last["radii"].float() if last is not None else zeros(n),
                         visible.float() if visible is not None else zeros(n),
                         *(m.float() for m in masks), step_loss.float().reshape(1)]
        parts = self.summed(parts, "the all-reduce of a training step")
        for k, g in zip(names, parts):
            model.params[k].grad = g
        view_grad, radii, seen = parts[len(names):len(names) + 3]
        for m, summed in zip(masks, parts[len(names) + 3:-1]):
            m.copy_(summed > 0)
        stats_out = dict(radii=radii, visibility_filter=radii > 0, viewspace_points=_Grad(view_grad))
        return parts[-1].reshape(()), seen > 0, stats_out


def _per_view_masks(stats, n):
    """The strategy state's boolean per-Gaussian rows (masks its per-view hook ORs in, e.g. the student's blur
    split), in the state's order: the same list on every rank."""
    return [v for v in stats.values() if torch.is_tensor(v) and v.dtype == torch.bool and v.shape[0] == n]


def on_rank0_alone(views_per_step):
    """Whether a data-parallel stage trains on rank 0 alone: one view per step is not split over ranks."""
    return views_per_step == 1


def start(ctx, views_per_step, label):
    """The StepSync of a data-parallel stage (the caller broadcasts the model once made), or None with one view per
    step: a view is not split, so rank 0 trains ``label`` alone as one process does (a step-by-step all-reduce of
    every gradient from ranks that render nothing only costs: on 2 x H200 the bonsai student took 41.7 s under
    torchrun against 33.7 s in one process). Then every rank leaves the process group here, together, and the
    caller's ranks other than 0 are done. Says when --views_per_step leaves ranks idle."""
    if on_rank0_alone(views_per_step):
        if ctx.is_writer:
            print(f"note: --views_per_step 1: rank 0 trains {label} alone (one view per step is not split over "
                  f"ranks); raise --views_per_step to at least {ctx.world_size} to train it data-parallel", flush=True)
        distributed.close(ctx)
        return None
    sync = StepSync(ctx, views_per_step)
    if views_per_step < ctx.world_size and sync.is_writer:
        print(f"note: --views_per_step {views_per_step} limits {label} to {views_per_step} of {ctx.world_size} ranks "
              f"(the others wait at each step's all-reduce with zero contributions): correct, not faster; raise "
              f"--views_per_step to at least {ctx.world_size}", flush=True)
    return sync
