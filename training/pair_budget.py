"""The CUDA rasterizer's capacity mode for training renders: a forward that reads nothing back to the host.

The rasterizer's standard forward reads the view's count of (tile, Gaussian) pairs back to the host to size its
buffers: one host-device sync per render, which makes the host wait for the GPU every step and so adds the host's
launch work to the GPU's instead of overlapping them (issue 12's lego profile: 2.96 ms a step eager against 1.50
ms of GPU work). In capacity mode (contract.py: pair_capacity, pair_meta) the buffers are sized by the caller and
the kernels write [visible, pairs, overflow] to a device tensor; a view that needs more pairs than the capacity
renders without its deepest ones (its gradients are those of that render) and sets the overflow flag.

PairBudget holds that capacity and its bookkeeping for one model: each render's overflow flag is added to a
counter and its pairs to a running maximum, on the device; the host reads both from a pinned copy a step or two
later, never waiting, and resizes: double after an overflow, at least HEADROOM x the most pairs seen (scaled by
the model's growth since), and down again when far above that. Used by --cuda_graphs (training/graph_step.py,
whose graph holds the capacity it was captured with) and by --capacity_mode for eager steps (training/loop.py).
"""
import torch

import gaussian_renderer
from gaussian_renderer import render

INITIAL_PAIRS_PER_GAUSSIAN = 16  # the first guess, before a view was measured
HEADROOM = 2.0  # capacity = this x the most pairs seen (views differ; a densification can double the model)
MIN_CAPACITY = 1024
SHRINK_BELOW = 0.25  # shrink when the needed capacity is under this fraction of the current one


def capacity_mode_applies(pipe, device):
    """--capacity_mode: on (train.py checked the CUDA rasterizer is there), off, or auto: on where our CUDA
    rasterizer renders (a CUDA device, --backend auto or cuda, the extension built)."""
    backend = getattr(pipe, "backend", "auto")
    return gaussian_renderer.fast_path_on(getattr(pipe, "capacity_mode", "off"), device, backend)


def pairs_that_fit(render_at, capacity, meta):
    """One view's pair count: ``render_at(capacity)`` renders it in capacity mode (writing ``meta``), again with
    twice the pairs it counted while they did not fit (waits for each count: a sync). Returns (pairs, the capacity
    of the render that fitted)."""
    while True:
        with torch.no_grad():
            render_at(capacity)
        _, pairs, overflow = meta.tolist()
        if not overflow:
            return pairs, capacity
        capacity = 2 * pairs


class PairBudget:
    def __init__(self, device, capacity=None):
        self.dev = torch.device(device)
        if self.dev.type == "cuda" and self.dev.index is None:  # (an index spares every stream lookup the device query)
            self.dev = torch.device("cuda", torch.cuda.current_device())
        self.meta = torch.zeros(3, dtype=torch.int32, device=self.dev)  # [visible, pairs, overflow] of a render
        self.counters = torch.zeros(2, dtype=torch.int32, device=self.dev)  # [overflowed renders, most pairs]
        self._peak = self.counters[1:2]
        self.host = torch.zeros(2, dtype=torch.int32, pin_memory=self.dev.type == "cuda")  # (read without waiting)
        # one event, recorded again after each read: poll() runs once a replay, and a new event (and the current
        # stream's lookup) each time cost a small model's host more than its GPU took for the step
        self._event = torch.cuda.Event() if self.dev.type == "cuda" else None
        self.copy_event = None
        self.capacity = capacity
        self.overflows = 0  # renders that overflowed, as read so far
        self.peak_pairs = 0  # the most pairs of one render in the last read's window
        self.peak_points = self.queued_points = 1  # the model's size when those pairs were rendered
        self.renders = 0

    def render_kwargs(self):
        return dict(pair_capacity=self.capacity, pair_meta=self.meta)

    def render(self, camera, model, pipe, bg, **kw):
        """gaussian_renderer.render in capacity mode (sized by one measured render, a sync, the first time),
        its counts recorded after it: how --capacity_mode's eager steps render."""
        if self.capacity is None:
            self.measure(camera, model, pipe, bg, kw.get("opacity"))
        out = render(camera, model, pipe, bg, **kw, **self.render_kwargs())
        self.record()
        return out

    def record(self):
        """After a capacity-mode render (also inside a graph capture: device ops only)."""
        self.counters[0:1] += self.meta[2:3]
        torch.maximum(self.counters[1:2], self.meta[1:2], out=self.counters[1:2])
        self.renders += 1

    def measure(self, camera, model, pipe, bg, opacity=None):
        """Size the capacity from one view's pairs, rendered in capacity mode without grad until they fit
        (INITIAL_PAIRS_PER_GAUSSIAN x the model's size first): it waits for the counts, a sync, so only for a
        graph capture or the first eager render."""
        pairs, _ = pairs_that_fit(
            lambda cap: render(camera, model, pipe, bg, opacity=opacity, pair_capacity=cap, pair_meta=self.meta),
            max(MIN_CAPACITY, self.capacity or INITIAL_PAIRS_PER_GAUSSIAN * model.num_points), self.meta)
        self.capacity = max(MIN_CAPACITY, int(HEADROOM * pairs), self.capacity or 0)
        return self.capacity

    def poll(self, num_points=0):
        """Read the counters once their last copy has landed (never waiting) and queue the next copy
        (``num_points``: the model's size now, which the next read's pairs go with). Returns True when renders
        overflowed since the last read; the capacity has then doubled. Nothing before the first render."""
        if self.capacity is None:
            return False
        grew = False
        if self.copy_event is not None and self.copy_event.query():
            total, self.peak_pairs = self.host.tolist()
            self.peak_points = self.queued_points
            if total > self.overflows:
                self.overflows, grew = total, True
                self.capacity = max(2 * self.capacity, int(HEADROOM * self.peak_pairs))
            self.copy_event = None
        if self.copy_event is None:
            self.host.copy_(self.counters, non_blocking=True)
            self._peak.zero_()  # (stream order: after the copy) the next window's maximum
            self.copy_event = self._event
            self.copy_event.record(torch.cuda.current_stream(self.dev))
            self.queued_points = max(1, num_points)
        return grew

    def fit(self, num_points, shrink=True):
        """Keep the capacity at HEADROOM x the most pairs of the last read, scaled by the model's growth since (a
        densification between two reads); shrink only when far above that (after prunes). Eager steps call it
        every step; a graph, whose capacity is fixed in it, when it is captured again, with ``shrink=False``
        (the last read covers a step or two: after an opacity reset their pairs are a fraction of what the
        opacities grow back to, and a graph sized to them would overflow and be captured again and again)."""
        if self.capacity is None or not self.peak_pairs:
            return
        needed = max(MIN_CAPACITY, int(HEADROOM * self.peak_pairs * max(1.0, num_points / self.peak_points)))
        if needed > self.capacity or (shrink and needed < SHRINK_BELOW * self.capacity):
            self.capacity = needed

    def summary(self):
        """Renders, overflowed renders (exact: read with a sync, once, at the end) and the last capacity."""
        return dict(renders=self.renders, overflows=int(self.counters[0].item()), pair_capacity=self.capacity)


class QueuedRenders:
    """No-grad renders of many views (importance scores, the teachers' targets, evaluations) that the host queues
    without waiting for each: --capacity_mode's renders, one PairBudget per model sized by its first view (a sync),
    each view's overflow flag kept on the device. The standard forward reads every view's pair count back, so the
    GPU idled while the host prepared the next render (lego's student stage: ~1,600 such renders). A view whose
    pairs did not fit rendered without its deepest ones: :meth:`overflowed` names it after the pass (one sync) for
    the caller to render again exactly, and the ``ok`` of :meth:`render` (a device 0/1) lets a running sum leave it
    out meanwhile. Without the capacity mode (CPU, another backend, --capacity_mode off) every render is the
    standard, exact one."""

    def __init__(self, device, pipe, views):
        self.on = capacity_mode_applies(pipe, torch.device(device))
        self.budgets = []  # (model, its PairBudget): models compare by identity
        self.flags = torch.zeros(views, dtype=torch.int32, device=device) if self.on else None  # [views] overflowed

    def _budget(self, model):
        for m, b in self.budgets:
            if m is model:
                return b
        self.budgets.append((model, PairBudget(model.device)))
        return self.budgets[-1][1]

    def render(self, index, camera, model, pipe, bg, **kw):
        """View ``index``'s render: (render output, ok), ok a float [1] on the device, 1 where it fitted and 0 where
        it overflowed (:meth:`overflowed` then lists it), or None for a standard render (exact: nothing to redo)."""
        if not self.on:
            return render(camera, model, pipe, bg, **kw), None
        budget = self._budget(model)
        out = budget.render(camera, model, pipe, bg, **kw)
        over = budget.meta[2:3]
        self.flags[index:index + 1] |= over
        ok = (over == 0).float()  # (before the next render overwrites the meta)
        budget.poll(model.num_points)  # (the capacity doubles, a view or two late, after an overflow)
        return out, ok

    def overflowed(self):
        """The indices of the views a render of which overflowed (waits for the device, once)."""
        if not self.on:
            return []
        return [i for i, f in enumerate(self.flags.tolist()) if f]
