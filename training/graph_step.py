"""--cuda_graphs: a training step's view (render, image loss, backward) as one CUDA graph.

A small scene's step is bound by the host launching ~50 kernels (issue 12's lego profile: the GPU busy 1.1 of
2.9 ms). A graph captured once replays them in one launch while the model keeps its tensors: between
densifications, SH-degree raises and opacity resets. Each step the host then only picks the view, copies its
camera and photo into the graph's static buffers and replays; Adam, the densification statistics and everything
else of the loop stay as they are.

The CUDA rasterizer's capacity mode (training/pair_budget.py) makes the forward free of host-device syncs: its
pair buffers are sized with headroom from the pairs of the capture's view, and a step whose view needs more
renders without its deepest pairs. The graph adds each replay's overflow flag to a counter on the device, which
the host reads without waiting; when it grew, the capacity doubles and the graph is captured again.
``overflows`` counts such steps (distill.json / the run summary reports them).

The model is captured again after every densification (its tensors change): ~150 times in a
--steps_scale 0.25 stage. The first capture is careful: it measures its view's pairs (a render that waits for the
device), runs the warm-up pass PyTorch asks for before a capture (lazy initialisations), and waits for the device
and empties the allocator's cache before capturing into a fresh memory pool, as torch.cuda.graph does. A later one
sizes the pair buffers from the replays' counts, as the eager capacity mode does (read late, never waiting, never
shrinking the buffers then), and captures at once into the previous graph's memory pool, so the host goes on
queueing while the device works and the eager steps keep their cached memory. Every CAREFUL_EVERY-th capture is
careful again (a fresh pool: the shared one keeps the segments the growing model's tensors outgrew), and a quick
capture that fails is retried once the careful way before the step gives up on the graph. A failed capture gives
its pool back to the allocator (_abandon_capture).

The student's step takes it too: its view's second target (the teachers' combined render, Role.view_target) is
copied into a buffer the graph reads, as the photo is, and its weight is part of what the graph was captured
with. Its novel view (a pose with no photo, learnt against the teachers' render: Role.step_loss) has a graph of
its own, GraphedStep.add_view, whose backward adds its gradients in place to the ones the step's graph left (so
it replays only after that graph did, and is captured again whenever that graph is); the structure loss runs
eagerly after the replays, on the gradients the graphs left. With one view a step (and one process) the step's
graph also adds the strategy's per-view statistics (gradient norms, the blur split's area_max) to the state the
loop holds, in place, until densification ends; with several views a step they run eagerly after the replays,
on the render output the graphs left. A step whose view has a depth map to supervise, and G_drop's dropout iterations
(Role.drops: their renders draw the opacities they train with), run eagerly between the replays
(GraphedStep.eager_steps counts them). A --random_background colour is copied into a buffer the graph reads, as
the photo is. With several views a step (--views_per_step, 6 by default as the reference's) the step's graph takes
the first and a second graph the others, GraphedStep.further_view: captured once like the novel view's, it adds
its gradients to the step graph's and is replayed once a view, each replay's render output read (the densification
statistics) before the next (lego's eager 6-view step: the GPU busy 5.1 of 9.5 ms, 347 launches; fifteenth session).
A step whose first view steps eagerly (a depth map) steps its other views eagerly too: the further views' graph adds
only to the step graph's gradients (an eager view after a replay adds to those in place). Under data parallelism
(torchrun, --views_per_step >= 2) each rank's graphs take the views it renders, its first the step graph's; the
novel view's graph replays on the writer rank alone, which adds that loss once (the all-reduce after the replays
sums the ranks' gradients). The graphs need training views of one size and field of view and no --profile.

--cuda_graphs auto (the default) graphs every model whose step can take the graph, as on does; a capture that fails
raises GraphCaptureError with the model's gradients as they were before it (none; an added view's: the step
graph's), and the loop (training/loop.py) then trains that model eagerly (auto) or stops with one line (on); an
added view whose capture fails trains eagerly from then on, the step's graph going on.
"""
import time

import torch
from tqdm import tqdm

import gaussian_renderer
from gaussian_renderer import render
from scene.cameras import unit_image, unpack_matrices
from training.pair_budget import PairBudget
from utils.loss_utils import backward_weighted, photometric_loss


CAREFUL_EVERY = 16  # captures: at most this many share one memory pool (see GraphedStep._capture)
# the graphs that add their gradients to a step graph's, by their names in its summary: the student's novel view
# (GraphedStep.add_view) and a step's training views after its first (GraphedStep.further_view)
ADDERS = {"added_view": "an added view's", "further_views": "the further views'"}


class GraphCaptureError(RuntimeError):
    """Capturing a step's graph failed (a CUDA or PyTorch setup that cannot capture it, or no memory for it). The
    model's gradients are as they were before the capture and the graph dropped, so the step can run eagerly
    instead."""


class StaticView:
    """A camera stand-in whose matrices, photo (None for a pose-only camera: the target is then what the view
    learns) and second target (or None) live in buffers the graph reads: load() copies a camera's and its target's
    in. The target's weight is a constant of the capture."""

    def __init__(self, camera, device, target=None, weight=None):
        self.image_height, self.image_width = camera.image_height, camera.image_width
        self.tanfovx, self.tanfovy = camera.tanfovx, camera.tanfovy
        self._packed = camera.packed_matrices(device).clone()
        self._mats = unpack_matrices(self._packed)
        self.image = None if camera.image is None else camera.image.to(device).clone()  # uint8 [3, H, W]
        self.target = None if target is None else target.to(device).clone()  # float or half [3, H, W], as given
        self.weight = weight

    def matrices(self, device):
        return self._mats

    def load(self, camera, device, target=None):
        self._packed.copy_(camera.packed_matrices(device), non_blocking=True)  # (the three matrices at once)
        if self.image is not None:
            self.image.copy_(camera.image, non_blocking=True)
        if target is not None:
            self.target.copy_(target, non_blocking=True)


def without_graph(out):
    """A render output whose tensors no longer hold their autograd graph (after its backward): detached copies of
    the computed ones; leaves such as viewspace_points stay, with the .grad the statistics read. A graph kept alive
    holds the parameters' AccumulateGrad nodes, which remember the stream they were made on: a capture on another
    stream that meets them fails ("operation would make the legacy stream depend on a capturing blocking stream")."""
    return {k: v.detach() if torch.is_tensor(v) and v.grad_fn is not None else v for k, v in out.items()}


def capture_error_text(error):
    """One line for a failed capture: the error's type and first line, and for the one whose cause is known but not
    named by CUDA, that cause (see without_graph)."""
    text = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
    if "legacy stream depend on a capturing" in text:
        text += (" (an autograd graph made outside the capture was still alive: a loss or render output kept with its "
                 "graph from an eager step)")
    return text


def graphs_wanted(pipe, device):
    """--cuda_graphs: on (every model; train.py checked the CUDA rasterizer is there), off, or auto: every model
    where our CUDA rasterizer renders. Whether the model's steps can take the graph is graph_flag_conflict's and
    graph_ineligible's to say."""
    return gaussian_renderer.fast_path_on(getattr(pipe, "cuda_graphs", "off"), device, getattr(pipe, "backend", "auto"))


def graph_flag_conflict(pipe):
    """The flag that keeps every model's step off the graph (train.py refuses --cuda_graphs with it), or None."""
    if pipe.profile:
        return "--profile (it times the step's phases apart: leave one of the two flags out)"
    return None


def graph_ineligible(cameras=()):
    """Why this model's steps cannot take the graph (see the module docstring), or None: every role's can (its
    hooks run eagerly around the replay: G_perb's noise events in place on the parameters the graph reads before
    it, its statistics and the student's extra terms after it; G_drop's dropout iterations instead of it), when the
    training views share one image size and field of view (the graph holds them: views that differ would capture
    it again at every step). Data-parallel ranks each graph the views they render (training/data_parallel.py: the
    all-reduce, after the replays, sums the gradients the graphs left)."""
    if len({(c.image_height, c.image_width, c.tanfovx, c.tanfovy) for c in cameras}) > 1:
        return "its training views differ in size or field of view"
    return None


def _device_index(device):
    return device.index if device.index is not None else torch.cuda.current_device()


def _abandon_capture(graph, device, pool):
    """End a capture that failed and give back its hold on the memory pool. When CUDA invalidated the capture,
    CUDAGraph.capture_end raises before it tells the caching allocator the capture is over: the allocator would
    go on routing the capture stream's allocations to the pool, hold the pool forever, and fail an internal
    assertion at its next empty_cache (as between the pipeline's stages)."""
    try:
        graph.capture_end()
    except Exception:  # noqa: BLE001 (the capture is broken either way)
        pass
    try:
        graph.pool()  # (answers only after a capture that ended: the graph then gives its pool back when it goes)
        return
    except Exception:  # noqa: BLE001
        pass
    # (private, stable since PyTorch 2.3: the allocator stops routing to the pool, then the graph's hold goes; only
    # when capture_end had not ended the routing: a PyTorch whose capture_end did also releases the pool with the
    # graph, and a second release would take its count below zero)
    end = getattr(torch._C, "_cuda_endAllocateToPool", None) or getattr(
        torch._C, "_cuda_endAllocateCurrentStreamToPool", None)
    release = getattr(torch._C, "_cuda_releasePool", None)
    if end is None or release is None:
        return
    index = _device_index(device)
    try:
        end(index, pool)
    except Exception:  # noqa: BLE001 (no routing left to end: capture_end did the cleanup)
        return
    try:
        release(index, pool)
    except Exception:  # noqa: BLE001
        pass


def _release_generator(device):
    """A capture that failed before its end leaves the device's default generator in capture mode on some PyTorch
    versions (2.11: the next random draw outside a graph, e.g. densification's split, then raises "Offset increment
    outside graph capture"): give it a copy of its state (same seed and offset) that is not capturing."""
    gen = torch.cuda.default_generators[_device_index(device)]
    gen.graphsafe_set_state(gen.clone_state())


class GraphedStep:
    """A model's training view as a CUDA graph (see the module docstring). ``adds_to``: the GraphedStep whose
    gradients this graph's backward adds to, in place (add_view's graph of a pose-only view), or None: the step's
    own graph, whose backward makes the gradients."""

    def __init__(self, model, opt, pipe, bg, view_weight, adds_to=None):
        self.model, self.opt, self.pipe, self.view_weight = model, opt, pipe, view_weight
        self.base_bg = bg  # (the run's background) and the buffer the graph reads: step() copies another one in
        self.bg, self._bg_source = bg.clone(), bg
        self.adds_to = adds_to
        # the graphs that add to this one's gradients (ADDERS), each made on first use, False once its capture
        # failed; and for one that failed, what it had done and why
        self.adders, self.adder_failures = {}, {}
        self.dev = model.device
        self.pairs = PairBudget(self.dev)
        self.side = torch.cuda.Stream(self.dev)  # the warm-ups' stream (one: its cached blocks are reused)
        self.capture_stream = torch.cuda.Stream(self.dev)  # (one for every capture: they share one memory pool)
        self.key = None
        self.graph = self.view = self.out = self.loss = self.grads = None
        self.captures = self.replays = self.eager_steps = 0
        self.capture_seconds = 0.0  # host time in _capture: the measuring render's sync, warm-up, record, instantiate
        # the same by phase (issue 12: what a recapture after each densification costs): the measuring render
        # (waits for the device), the warm-up pass (enqueued on the side stream; with the careful capture's wait
        # for the device and cache flush), the capture and its instantiation
        self.capture_phases = dict(measure=0.0, warm_up=0.0, record=0.0)
        self.careful_captures = 0  # captures that measured their view (a sync) and warmed up first
        self.last_careful = 0  # (the capture count at the last careful one)

    def applies(self, camera):
        """This step's view can be replayed (no depth map to supervise)."""
        return camera.depth is None or not camera.depth_reliable

    def ran_eagerly(self):
        """The loop stepped this model eagerly instead (a view with a depth map, a dropout iteration)."""
        self.eager_steps += 1

    def _key(self, camera, want_stats, weight, target=None, stats=None):
        m = self.model
        # (the weights, of the view's loss and of its second target (None without one), are in the graph, and so
        # are the gradients an added view's backward adds to: the step's graph makes new ones at each capture, and
        # the statistics' rows it adds to)
        added = () if self.adds_to is None else tuple(g.data_ptr() for g in self.adds_to.grads)
        rows = None if stats is None else tuple(t.data_ptr() for t in stats[1].values())
        return (m.num_points, tuple(p.data_ptr() for p in m.params.values()), m.active_sh_degree, want_stats,
                camera.image_height, camera.image_width, camera.tanfovx, camera.tanfovy, self.pairs.capacity,
                weight, self.view_weight, added, None if target is None else target.dtype,  # (the buffer's dtype)
                rows)

    def _kept_grads(self):
        """The gradients the parameters hold around a capture: none for the step's own graph, the step graph's for
        an added view's (its backward adds to them)."""
        return self.adds_to.grads if self.adds_to is not None else [None] * len(self.model.params)

    def _set_grads(self, grads):
        for p, g in zip(self.model.params.values(), grads):
            p.grad = g

    def holds_gradients(self):
        """The parameters' gradients are the ones this graph's last replay wrote (not an eager step's)."""
        return self.grads is not None and all(g is not None and p.grad is g
                                              for p, g in zip(self.model.params.values(), self.grads))

    def _forward_backward(self, view, want_stats, stats=None):
        out = render(view, self.model, self.pipe, self.bg, return_stats=want_stats, **self.pairs.render_kwargs())
        if view.image is None:  # (a pose-only view: it learns its target)
            gt, second = view.target, None
        else:
            gt = unit_image(view.image)
            second = None if view.target is None else (view.target, view.weight)
        loss = photometric_loss(out["render"], gt, self.opt.lambda_dssim, second)
        backward_weighted(loss, self.view_weight)
        if stats is not None:  # (the strategy's statistics of the view, added in place: see step)
            strategy, state = stats
            strategy.count_view(state, out, view, want_stats)
        return out, loss.detach()

    def _capture(self, camera, want_stats, target, weight, stats=None):
        t0 = time.perf_counter()
        # careful: the first capture, one before the replays' pair counts were read, and every CAREFUL_EVERY-th
        # (a fresh memory pool: the shared one keeps segments that the growing model's tensors have outgrown)
        careful = (self.captures - self.last_careful >= CAREFUL_EVERY or not self.pairs.peak_pairs
                   or self.graph is None)
        while True:
            try:
                self._record(camera, want_stats, target, weight, careful, stats)
                break
            except Exception as e:  # noqa: BLE001 (whatever stopped the capture, the step can still run eagerly)
                self.graph = self.view = self.out = self.loss = self.grads = self.key = None
                _release_generator(self.dev)
                self._set_grads(self._kept_grads())  # (not the warm-up's or the capture's partial gradients)
                if not careful:  # (a quick recapture: once more with the measuring render and the warm-up)
                    careful = True
                    continue
                raise GraphCaptureError(capture_error_text(e)) from e
        if careful:
            self.careful_captures += 1
            self.last_careful = self.captures
        self.key = self._key(camera, want_stats, weight, target, stats)
        self.captures += 1
        self.capture_seconds += time.perf_counter() - t0

    def _record(self, camera, want_stats, target, weight, careful, stats):
        # a quick capture goes into the old graph's memory pool, so the old graph stays alive until the new one is
        # captured (a pool that no graph holds any more cannot be joined); its outputs go back to the pool first.
        # A careful one starts a fresh pool: the old graph goes now, and its pool with the cache emptied below
        old, self.graph = (None if careful else self.graph), None
        self.out = self.loss = self.grads = None
        params = list(self.model.params.values())
        kept = self._kept_grads()
        self._set_grads(kept)
        t0 = time.perf_counter()
        self.view = StaticView(camera, self.dev, target, weight)
        if careful:
            self.pairs.measure(self.view, self.model, self.pipe, self.bg)  # (a sync)
        else:  # (the replays' pairs, scaled by the model's growth since; not smaller: they are fixed in the graph)
            self.pairs.fit(self.model.num_points, shrink=False)
        t1 = time.perf_counter()
        if careful:
            self._set_grads([None] * len(params))  # (the warm-up's own gradients, then discarded: kept untouched)
            self.side.wait_stream(torch.cuda.current_stream(self.dev))
            with torch.cuda.stream(self.side):  # one warm-up pass outside the capture (its statistics on copies)
                scratch = None if stats is None else (stats[0], {k: t.clone() for k, t in stats[1].items()})
                self._forward_backward(self.view, want_stats, scratch)
            torch.cuda.current_stream(self.dev).wait_stream(self.side)
            self._set_grads(kept)
            # what torch.cuda.graph does before every capture: the device idle, the cached memory given back
            torch.cuda.synchronize(self.dev)
            torch.cuda.empty_cache()
        t2 = time.perf_counter()
        pool = torch.cuda.graph_pool_handle() if old is None else old.pool()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(self.capture_stream):  # (restored however the capture ends)
            graph.capture_begin(pool=pool)
            try:
                out, self.loss = self._forward_backward(self.view, want_stats, stats)
                self.pairs.record()
                graph.capture_end()
            except BaseException:
                _abandon_capture(graph, self.dev, pool)
                raise
        self.graph = graph
        for phase, seconds in zip(self.capture_phases, (t1 - t0, t2 - t1, time.perf_counter() - t2)):
            self.capture_phases[phase] += seconds
        # the static outputs without the capture's autograd graph: kept alive, its AccumulateGrad nodes (made on the
        # capture's stream) would take the eager backward of the student's own terms (novel view, structure loss)
        # on the default stream, which PyTorch warns of and syncs the two streams for (the H200 runs' one warning)
        self.out = without_graph(out)
        self.grads = [p.grad for p in params]
        if self.adds_to is not None and any(g is not k for g, k in zip(self.grads, kept)):
            # (autograd adds to a gradient in place when grad mode is off, as in backward(); anything else would
            # leave the step graph's gradients without this view's)
            raise RuntimeError("the added view's backward did not add to the step's gradients in place")

    def step(self, camera, want_stats, target=None, bg=None, stats=None):
        """Replay (capturing first when the model, view setup or second target's weight changed): (render
        output, loss). ``target``: the role's (image, weight) for this view, or None; ``bg``: this step's
        background (--random_background: a new one each step, copied into the buffer the graph reads), or None
        for the run's; ``stats``: (strategy, its state) when the replay also adds the view's statistics
        (strategy.observe where ``want_stats`` asks for any, and strategy.update_stats), in place, instead of the
        loop's eager calls after it: a growing model's seven small launches a step (lego's student: ~0.17 ms of
        host time, the host-bound step's), captured with the state's tensors (a new one captures again)."""
        bg = self.base_bg if bg is None else bg
        if bg is not self._bg_source:
            self.bg.copy_(bg, non_blocking=True)
            self._bg_source = bg
        image, weight = target if target is not None else (None, None)
        if self.key != self._key(camera, want_stats, weight, image, stats):
            self._capture(camera, want_stats, image, weight, stats)
        self.view.load(camera, self.dev, image)
        self.graph.replay()
        self.replays += 1
        self._set_grads(self.grads)  # (the optimizer step clears .grad; the graph writes the same tensors every replay)
        if self.pairs.poll(self.model.num_points):  # overflowed: the capacity doubled, capture again next step
            self.key = None
        return self.out, self.loss

    def _add(self, name, view_weight, camera, want_stats, target, bg):
        """After this step's replay: ``camera``'s view stepped by the adding graph ``name`` (see ADDERS), whose
        backward adds its gradients to the ones this replay left; its step()'s (render output, loss), or
        None when the parameters hold an eager step's gradients or that graph could not be captured (said once,
        recorded in the summary): the caller then steps the view eagerly."""
        if self.adders.get(name) is False or not self.holds_gradients():
            return None
        if name not in self.adders:
            self.adders[name] = GraphedStep(self.model, self.opt, self.pipe, self.base_bg, view_weight, adds_to=self)
        adder = self.adders[name]
        adder.view_weight = view_weight  # (in its key: a new weight captures again)
        try:
            return adder.step(camera, want_stats, target, bg)
        except GraphCaptureError as e:
            self.adder_failures[name] = dict(adder.summary(), failed_at_replay=self.replays, error=str(e))
            self.adders[name] = False
            tqdm.write(f"--cuda_graphs: capturing {ADDERS[name]} graph failed ({e}); those views train eagerly from "
                       f"here, the step's own graph goes on")
            return None

    def add_view(self, camera, target, weight):
        """A pose-only ``camera``'s loss against ``target`` (float or half [3, H, W]), x ``weight`` (the student's novel
        view), by the "added_view" graph: the unweighted loss (no autograd graph: the gradients are in), or None
        (see _add)."""
        done = self._add("added_view", weight, camera, False, (target, None), None)
        return None if done is None else done[1]

    def further_view(self, camera, want_stats, target=None, bg=None):
        """A further training view of this step (--views_per_step above 1; arguments as step's), by the
        "further_views" graph, replayed once for each: (render output, loss), or None (see _add). Its
        render output is the graph's: read it before the next view replays."""
        return self._add("further_views", self.view_weight, camera, want_stats, target, bg)

    def summary(self):
        """captures (and their host seconds), replays, the views the loop stepped eagerly instead, overflowed
        steps (exact: read with a sync, once, at the end) and the capacity; ``added_view`` and ``further_views``
        (ADDERS): the same of those graphs (or their failure), where there were any."""
        out = dict(captures=self.captures, careful_captures=self.careful_captures,
                   capture_seconds=round(self.capture_seconds, 3),
                   capture_phase_seconds={k: round(v, 4) for k, v in self.capture_phases.items()},
                   replays=self.replays, eager_steps=self.eager_steps,
                   overflows=self.pairs.summary()["overflows"], pair_capacity=self.pairs.capacity)
        for name in ADDERS:
            adder = self.adders.get(name)
            done = adder.summary() if adder else self.adder_failures.get(name)
            if done is not None:
                out[name] = done
        return out
