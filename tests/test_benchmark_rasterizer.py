"""scripts/benchmark_rasterizer.py's closing table (the timing itself needs a GPU): each renderer's median, both
of our modes' ratios to gsplat with their range, the peaks, and the rows whose capacity-mode renders overflowed."""
import math

import pytest

from scripts.benchmark_rasterizer import table


def _row(n, ours, cap, gsplat=None, overflows=0, graphed=None):
    ms = dict(ours=ours, ours_cap=cap, **({"gsplat": gsplat} if gsplat else {}),
              **({"ours_graph": graphed} if graphed else {}))
    ratio = {k: ((ms[k] / gsplat, ms[k] / gsplat - 0.01, ms[k] / gsplat + 0.02) if gsplat else (math.nan,) * 3)
             for k in ("ours", "ours_cap", "ours_graph") if k in ms}
    peaks = dict(ours=571.4, ours_cap=603.0, **({"gsplat": 608.2} if gsplat else {}))
    gpu = dict(ours_cap=0.5 * cap, **({"gsplat": 0.8 * gsplat} if gsplat else {}))
    return n, ms, ratio, peaks, 123456, overflows, gpu


def test_the_table_gives_both_modes_against_gsplat_and_flags_an_overflow():
    lines = table([_row(100_000, 1.22, 1.0, 1.52, graphed=0.76), _row(1_000_000, 1.61, 1.3, 1.85, overflows=3)],
                  rounds=5, runs=20)
    head, rows, note = lines[1], lines[3:5], " ".join(lines[5:])
    assert [c.strip() for c in head.split("|")] == ["N", "ours ms", "capacity", "graphed", "gsplat ms", "ratio",
                                                   "capacity ratio", "graphed ratio", "kernel ms capacity / gsplat",
                                                   "peak MiB ours / capacity / gsplat"]
    cells = [[c.strip() for c in r.split("|")] for r in rows]
    assert cells[0] == ["100000", "1.22", "1.00", "0.76", "1.52", "0.80 (0.79-0.82)", "0.66 (0.65-0.68)",
                        "0.50 (0.49-0.52)", "0.50 / 1.22 (0.41)", "571 / 603 / 608"]
    # a row without the graphed mode (e.g. its capture failed) reads nan there, the rest as before
    assert cells[1][:6] == ["1000000", "1.61", "1.30", "nan", "1.85", "0.87 (0.86-0.89)"]
    assert cells[1][7] == "nan (nan-nan)" and cells[1][-1].endswith("OVERFLOWED")
    assert not rows[0].endswith("OVERFLOWED")
    assert "median of 5 rounds' ratios" in note and "5 x 20 iterations" in note and "CUDA graphs" in note
    assert "the loss is the colour's sum, as gsplat's" in note
    assert "sums it into the loss" in " ".join(table([_row(100_000, 1.22, 1.0)], 1, 3, depth_loss=True))


def test_without_gsplat_the_ratios_read_nan():
    lines = table([_row(100_000, 1.22, 1.0)], rounds=1, runs=3)
    cells = [c.strip() for c in lines[3].split("|")]
    assert cells[4] == "nan" and cells[5] == "nan (nan-nan)" and cells[8] == "0.50 / nan (nan)"
    assert cells[9] == "571 / 603 / nan"


def test_the_kernel_time_sums_the_gpus_work_only():
    """Kernel ms: the device events' own time over the iterations; host events (which carry their kernels' time in
    their totals) and the GPU-side ranges of annotations are not counted again."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    from scripts.benchmark_rasterizer import device_ms
    from utils.phase_timer import gpu_work_by_name

    def event(device, us, name="k", annotation=False):
        return SimpleNamespace(device_type=device, self_device_time_total=us, name=name, is_user_annotation=annotation)
    events = [event(DeviceType.CUDA, 300.0, "render_bwd_kernel"), event(DeviceType.CUDA, 500.0, "Memset (Device)"),
              event(DeviceType.CPU, 800.0, "aten::sum"), event(DeviceType.CUDA, 900.0, "ProfilerStep#3"),
              event(DeviceType.CUDA, 700.0, "my_range", annotation=True)]
    assert device_ms(events, 2) == 0.4
    # the same events summed by kernel name (--profile's and profile_step's lists)
    assert gpu_work_by_name(events + [event(DeviceType.CUDA, 100.0, "render_bwd_kernel")]) == [
        ("Memset (Device)", 1, 500.0), ("render_bwd_kernel", 2, 400.0)]


def test_the_extension_says_what_the_environment_flags_choose(monkeypatch):
    """The settings line of the benchmark's table comes from the extension's render_flags(): the defaults, each flag's
    other value, and a bad value refused with the flag's name (host code: no GPU needed, only the built extension)."""
    from gaussian_renderer.cuda_package import has_kernels, package

    if not has_kernels():
        pytest.skip("the diff_gaussian_rasterization extension is not built here")
    ext = package.extension()
    flags = ("DGR_EMIT", "DGR_FWD_CULL", "DGR_BWD_CULL")
    for name in flags:
        monkeypatch.delenv(name, raising=False)
    assert ext.render_flags() == {"DGR_EMIT": "warp", "DGR_FWD_CULL": "on", "DGR_BWD_CULL": "on"}
    others = {"DGR_EMIT": "thread", "DGR_FWD_CULL": "off", "DGR_BWD_CULL": "off"}
    for name, value in others.items():
        monkeypatch.setenv(name, value)
    assert ext.render_flags() == others
    monkeypatch.setenv("DGR_FWD_CULL", "maybe")
    with pytest.raises(RuntimeError, match="DGR_FWD_CULL must be on or off, not 'maybe'"):
        ext.render_flags()


def test_the_gpus_waits_for_the_host_are_charged_to_the_ops_that_launched_late():
    """gpu_waits: a gap whose next kernel was launched after the GPU went idle is a wait, charged to the CPU ops around
    that launch (innermost three, outermost first), the kernel's name and the runtime calls during the wait; a gap
    whose launch came earlier (the GPU was busy elsewhere or waiting on an event) is not; time before an iteration's
    first kernel is its prelude; work outside the iteration ranges is ignored."""
    from utils.phase_timer import gpu_waits

    def x(cat, name, ts, dur, corr=None):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur,
                "args": {} if corr is None else {"correlation": corr}}
    ev = [x("user_annotation", "iteration", 0, 100), x("user_annotation", "iteration", 200, 100),
          x("cpu_op", "forward", 1, 60), x("cpu_op", "aten::zeros", 30, 5), x("cpu_op", "aten::fill_", 31, 3),
          x("cpu_op", "backward", 205, 60)]
    # iteration 1: k1 launched at 2, runs 10-20; k2 launched at 32 inside forward > aten::zeros > aten::fill_, runs
    # 40-50 (a wait of 20); k3 launched at 33 but runs 70-80 after a stream dependency (not a wait)
    ev += [x("cuda_runtime", "cudaLaunchKernel", 2, 1, 1), x("kernel", "k1", 10, 10, 1),
           x("cuda_runtime", "cudaLaunchKernel", 32, 1, 2), x("gpu_memset", "Memset (Device)", 40, 10, 2),
           x("cuda_runtime", "cudaLaunchKernel", 33, 1, 3), x("kernel", "k3", 70, 10, 3)]
    # iteration 2: k4 at 215-225, k5 launched at 250 by backward (after the GPU went idle at 225): a wait of 35
    # ... while a cudaMalloc ran 230-245
    ev += [x("cuda_runtime", "cudaLaunchKernel", 206, 1, 4), x("kernel", "k4", 215, 10, 4),
           x("cuda_runtime", "cudaMalloc", 230, 15), x("cuda_runtime", "cudaMalloc", 150, 10),
           x("cuda_runtime", "cudaLaunchKernel", 250, 1, 5), x("kernel", "k5", 260, 5, 5),
           x("cuda_runtime", "cudaLaunchKernel", 400, 1, 6), x("kernel", "outside", 410, 5, 6)]
    n, prelude, rows = gpu_waits({"traceEvents": ev + [{"ph": "f", "name": "flow"}]})
    assert n == 2 and prelude == 10 + 15
    assert rows == [(35, 1, "backward", "k5", "cudaMalloc"),
                    (20, 1, "forward > aten::zeros > aten::fill_", "Memset (Device)", "")]
    # a wait shorter than min_us is left out
    assert gpu_waits({"traceEvents": ev}, min_us=25)[2] == [(35, 1, "backward", "k5", "cudaMalloc")]
