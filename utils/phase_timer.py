"""Per-phase timing of training steps (--profile): CUDA events on the GPU, wall clock on the CPU.

Events are read back in batches, so profiling adds one host-device sync every ``flush_every`` steps
rather than one per phase.
"""
import contextlib
import time

import torch

_OFF = contextlib.nullcontext()


class PhaseTimer:
    def __init__(self, device, enabled=False, flush_every=50):
        self.enabled = enabled
        self.cuda = enabled and torch.device(device).type == "cuda"
        self.flush_every = flush_every
        self.pending = []  # steps not yet read back: lists of (name, start, end)
        self.current = []
        self.total_ms = {}  # name -> ms summed over the steps read back
        self.steps = 0

    def __call__(self, name):
        """Context manager timing one occurrence of ``name`` within the current step."""
        return self._time(name) if self.enabled else _OFF

    @contextlib.contextmanager
    def _time(self, name):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.current.append((name, start, end))
        else:
            t0 = time.perf_counter()
            yield
            self.current.append((name, t0, time.perf_counter()))

    def end_step(self):
        if not self.enabled:
            return
        self.pending.append(self.current)
        self.current = []
        if len(self.pending) >= self.flush_every:
            self.flush()

    def flush(self):
        if self.cuda and self.pending:
            torch.cuda.synchronize()
        for step in self.pending:
            for name, a, b in step:
                ms = a.elapsed_time(b) if self.cuda else 1000.0 * (b - a)
                self.total_ms[name] = self.total_ms.get(name, 0.0) + ms
        self.steps += len(self.pending)
        self.pending = []

    def summary(self):
        """{phase: mean ms per step (rare events such as prunes included)}, or None when profiling is off."""
        if not self.enabled:
            return None
        self.flush()
        return {name: round(ms / max(1, self.steps), 3) for name, ms in self.total_ms.items()}


def gpu_work_events(events):
    """The GPU's work among torch.profiler's events (kernels, copies, fills): its device events, without the GPU-side
    ranges of record_function annotations (Optimizer.step, ProfilerStep#), which span work rather than being it."""
    return [e for e in events if e.device_type.name == "CUDA" and not getattr(e, "is_user_annotation", False)
            and not e.name.startswith(("Optimizer.", "ProfilerStep"))]


def gpu_work_us(events):
    """Microseconds of the GPU's work among torch.profiler's events (gpu_work_events, each its own time)."""
    return sum(e.self_device_time_total for e in gpu_work_events(events))


def gpu_work_by_name(events):
    """(name, count, microseconds) of the GPU's work among torch.profiler's events, summed by kernel name, the
    costliest first."""
    totals = {}
    for e in gpu_work_events(events):
        n, us = totals.get(e.name, (0, 0.0))
        totals[e.name] = (n + 1, us + e.self_device_time_total)
    return sorted(((name, n, us) for name, (n, us) in totals.items()), key=lambda r: -r[2])


GPU_WORK_CATEGORIES = ("kernel", "gpu_memset", "gpu_memcpy")


def gpu_waits(trace, iteration="iteration", min_us=2.0):
    """Where the GPU waits for the host, from a torch.profiler Chrome trace (CPU and CUDA activity; the dict that
    export_chrome_trace writes) whose iterations are record_function(`iteration`) ranges.

    Within an iteration, a gap of at least `min_us` between one piece of GPU work and the next is a wait for the host
    when the next one's launch call started after the GPU went idle. Each wait is charged to the chain of CPU ops
    that enclose that launch (outermost first, the innermost three), with the next work's name and the CUDA runtime
    calls other than kernel launches that ran while the GPU waited (a cudaMalloc of the caching allocator, a copy
    that synchronises, a memset's launch). Returns (iterations, the GPU's idle time before each iteration's first work
    summed, [(us summed, count, ops, next work, runtime calls)] the largest first). Gaps whose launch came before the
    GPU went idle (dependencies, stream order) are not waits for the host and are left out."""
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X"]
    spans = sorted((e["ts"], e["ts"] + e.get("dur", 0)) for e in events
                   if e.get("cat") in ("user_annotation", "cpu_op") and e.get("name") == iteration)
    work = sorted((e for e in events if e.get("cat") in GPU_WORK_CATEGORIES), key=lambda e: e["ts"])
    runtime = [e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver")]
    launches = {e["args"]["correlation"]: e for e in runtime if "correlation" in e.get("args", {})}
    others = [e for e in runtime if "Launch" not in e["name"]]
    ops = sorted((e for e in events if e.get("cat") == "cpu_op" and e.get("name") != iteration),
                 key=lambda e: e["ts"])

    def enclosing(ts):
        chain = [e for e in ops if e["ts"] <= ts <= e["ts"] + e.get("dur", 0)]
        chain.sort(key=lambda e: (e["ts"], -e.get("dur", 0)))  # outermost first
        return " > ".join(e["name"] for e in chain[-3:]) or "(no op: Python or the profiler)"

    prelude, waits = 0.0, {}
    for start, end in spans:
        mine = [e for e in work if start <= e["ts"] <= end]
        if not mine:
            continue
        prelude += mine[0]["ts"] - start
        for prev, nxt in zip(mine, mine[1:]):
            idle_from = prev["ts"] + prev.get("dur", 0)
            gap = nxt["ts"] - idle_from
            launch = launches.get(nxt.get("args", {}).get("correlation"))
            if gap < min_us or launch is None or launch["ts"] < idle_from:
                continue
            calls = sorted({e["name"] for e in others
                            if e["ts"] < launch["ts"] and e["ts"] + e.get("dur", 0) > idle_from})
            key = (enclosing(launch["ts"]), nxt["name"], ", ".join(calls))
            us, n = waits.get(key, (0.0, 0))
            waits[key] = (us + gap, n + 1)
    rows = sorted(((us, n, *key) for key, (us, n) in waits.items()), key=lambda r: -r[0])
    return len(spans), prelude, rows
