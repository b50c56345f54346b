"""report.png at the end of a train.py run, and the Markdown table metrics.py writes beside results.json.

The report reads what train.py wrote (each model's training_log.json: its evaluations ``history`` and
``gaussian_counts``; distill.json: the final evaluation of each model of a distillation) and draws three
panels: test PSNR over iterations, Gaussian count over iterations (one line per model), and final PSNR
against Gaussian count (one point per model). Matplotlib (Agg, no display) is imported only when drawing.
"""
import io
import os
import sys

from utils.run_models import training_curves
from utils.system_utils import write_file

REPORT_NAME = "report.png"
COLOURS = {"G_perb": "#1f77b4", "G_drop": "#2ca02c", "G_std": "#ff7f0e", "student": "#d62728", "model": "#d62728"}


def _colour(name, k):
    return COLOURS.get(name, f"C{k % 10}")


def draw_report(model_path):
    """(matplotlib Figure, the curves it shows); the figure is not attached to pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    kind, curves = training_curves(model_path)
    fig = Figure(figsize=(15, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    ax_psnr, ax_count, ax_scatter = fig.subplots(1, 3)
    splits = {c["split"] for c in curves if c["split"]}
    split = "/".join(sorted(splits)) or "test"
    count_fmt = FuncFormatter(lambda v, _: f"{v / 1e6:.4g}M" if abs(v) >= 1e6 else
                              f"{v / 1e3:.4g}k" if abs(v) >= 1e3 else f"{v:.0f}")
    for k, c in enumerate(curves):
        col = _colour(c["name"], k)
        if c["history"]:
            its = [h["iteration"] for h in c["history"]]
            ax_psnr.plot(its, [h["psnr"] for h in c["history"]], "o-", color=col, label=c["name"], ms=4)
        counts = list(c["counts"])
        if c["history"]:  # the evaluated counts fill in where the sampled counts have gaps
            counts += [[h["iteration"], h["gaussians"]] for h in c["history"] if h.get("gaussians") is not None]
        if counts:
            counts.sort()
            ax_count.plot([p[0] for p in counts], [p[1] for p in counts], "-", color=col, label=c["name"])
        if c["final_psnr"] is not None and c["final_gaussians"]:
            ax_scatter.scatter([c["final_gaussians"]], [c["final_psnr"]], color=col, s=50, zorder=3,
                               label=f"{c['name']}: {c['final_psnr']:.2f} dB, {c['final_gaussians']:,}")
    ax_psnr.set(title=f"{split} PSNR during training", xlabel="iteration", ylabel="PSNR (dB)")
    ax_count.set(title="Gaussians during training", xlabel="iteration", ylabel="Gaussians")
    ax_scatter.set(title=f"final {split} PSNR against size", xlabel="Gaussians", ylabel="PSNR (dB)")
    ax_count.yaxis.set_major_formatter(count_fmt)
    ax_scatter.xaxis.set_major_formatter(count_fmt)
    ax_scatter.margins(x=0.3, y=0.3)
    for ax, has in ((ax_psnr, any(c["history"] for c in curves)),
                    (ax_count, any(c["counts"] or c["history"] for c in curves)),
                    (ax_scatter, any(c["final_psnr"] is not None for c in curves))):
        ax.grid(alpha=0.3)
        if not has:
            ax.text(0.5, 0.5, "nothing recorded\n(no evaluation: see --test_iterations)" if ax is not ax_count
                    else "nothing recorded", ha="center", va="center", transform=ax.transAxes, color="0.4")
        elif ax is ax_scatter or len(curves) > 1:
            ax.legend(fontsize=8)
    title = "Distillation" if kind == "distill" else "3DGS"
    fig.suptitle(f"{title}: {os.path.abspath(model_path)}", fontsize=10)
    fig.tight_layout()
    return fig, curves


def figure_rgb(fig):
    """[H, W, 3] uint8 of a drawn Agg figure."""
    import numpy as np

    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()


def write_report(model_path, tensorboard=False):
    """Write <model>/report.png (and, with ``tensorboard``, the same image as a TensorBoard event); returns
    the PNG's path."""
    fig, _ = draw_report(model_path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = os.path.join(model_path, REPORT_NAME)
    write_file(path, buf.getvalue())
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(model_path)
        try:
            writer.add_image("report", figure_rgb(fig), dataformats="HWC")
        finally:
            writer.close()
    return path


def report_at_end(model_path, tensorboard=False):
    """train.py's last step: write the report; a failure only warns (the models are already saved)."""
    try:
        path = write_report(model_path, tensorboard)
        print(f"Report: {path}")
        return path
    except Exception as exc:  # noqa: BLE001 - plotting must never fail a finished training run
        print(f"warning: could not write {REPORT_NAME} ({exc.__class__.__name__}: {exc}); the models are saved",
              file=sys.stderr)
        return None


# ----------------------------------------------------------------------------------------------------------------
# metrics.py's results.md

def _cell(v, fmt):
    return "–" if v is None else fmt.format(v)


def results_markdown(model_path, results, per_view, split="test"):
    """Markdown: the metrics of the renders metrics.py just evaluated (per ours_<it> folder), then the models
    of the run as train.py evaluated them (distill.json / training_log.json), when recorded."""
    lines = [f"# Metrics: `{os.path.basename(os.path.normpath(model_path))}`", "",
             f"Renders in `{split}/ours_<iteration>/` (render.py), evaluated by metrics.py:", "",
             "| renders | views | PSNR | SSIM | LPIPS |", "|:--|--:|--:|--:|--:|"]
    for method, r in results.items():
        views = len((per_view.get(method) or {}).get("PSNR") or {})
        lines.append(f"| {method} | {views} | {_cell(r.get('PSNR'), '{:.2f}')} | {_cell(r.get('SSIM'), '{:.4f}')} "
                     f"| {_cell(r.get('LPIPS'), '{:.4f}')} |")
    try:
        kind, curves = training_curves(model_path)
    except Exception:  # noqa: BLE001 - a folder of renders without a training run still gets its table
        curves = []
    curves = [c for c in curves if c["final_psnr"] is not None or c["final_gaussians"] is not None]
    if curves:
        source = "distill.json" if kind == "distill" else "training_log.json"
        lines += ["", f"The run's models, as train.py evaluated them ({source}):", "",
                  "| model | Gaussians | PLY MB | PSNR | SSIM | LPIPS | split |", "|:--|--:|--:|--:|--:|--:|:--|"]
        for c in curves:
            lines.append(f"| {c['name']} | {_cell(c['final_gaussians'], '{:,}')} | {_cell(c['ply_mb'], '{:.2f}')} "
                         f"| {_cell(c['final_psnr'], '{:.2f}')} | {_cell(c['final_ssim'], '{:.4f}')} "
                         f"| {_cell(c['final_lpips'], '{:.4f}')} | {c['split'] or '–'} |")
    return "\n".join(lines) + "\n"
