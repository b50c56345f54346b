"""render.py --compare: per test view, student | G_std | ground truth | |student - GT| in one labelled image.

The error panel is the student's absolute error against the ground truth (mean over RGB, times
``ERROR_GAIN``, clipped, inferno colour map): next to the G_std panel it shows where the student falls
short of the image, which is what distillation has to preserve; a student-vs-G_std difference would also
light up wherever the teacher itself is wrong.
"""
import os

import cv2
import numpy as np
import torch
from tqdm import tqdm

from gaussian_renderer import render
from utils.image_utils import to_uint8

ERROR_GAIN = 4.0
HEADER = 18  # px of label bar above each panel (at least; grows with the image)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def psnr_of(a, b):
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) / 255.0 ** 2
    return 10.0 * np.log10(1.0 / max(mse, 1e-20))


def error_image(pred, gt, gain=ERROR_GAIN):
    """[H, W, 3] uint8 RGB heat map of gain x mean |pred - gt| over channels (uint8 inputs)."""
    err = np.abs(pred.astype(np.float32) - gt.astype(np.float32)).mean(axis=2) / 255.0
    grey = np.clip(err * gain * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO)[:, :, ::-1]


def labelled(img, text):
    """``img`` [H, W, 3] uint8 RGB with a white label bar on top; the font shrinks to fit the width."""
    h, w = img.shape[:2]
    bar = max(HEADER, h // 12)
    scale = bar / 30.0
    while scale > 0.2 and cv2.getTextSize(text, FONT, scale, 1)[0][0] > w - 4:
        scale *= 0.9
    (tw, th), _ = cv2.getTextSize(text, FONT, scale, 1)
    top = np.full((bar, w, 3), 255, dtype=np.uint8)
    cv2.putText(top, text, (2, (bar + th) // 2), FONT, scale, (0, 0, 0), max(1, round(scale)), cv2.LINE_AA)
    return np.concatenate([top, img], axis=0)


def compare_image(student, std, gt, gain=ERROR_GAIN):
    """The four labelled panels side by side (uint8 RGB inputs of one size) and the two PSNRs."""
    ps, pt = psnr_of(student, gt), psnr_of(std, gt)
    panels = [labelled(student, f"student {ps:.2f} dB"), labelled(std, f"G_std {pt:.2f} dB"),
              labelled(gt, "ground truth"), labelled(error_image(student, gt, gain), f"|student - GT| x{gain:g}")]
    gap = np.full((panels[0].shape[0], 2, 3), 255, dtype=np.uint8)
    row = [panels[0]]
    for p in panels[1:]:
        row += [gap, p]
    return np.concatenate(row, axis=1), ps, pt


@torch.no_grad()
def write_compare(out_dir, cameras, student, std, pipe, bg, write_png, quiet=False):
    """Write <out_dir>/00000.png... (camera order, as renders/); returns (views, mean student PSNR, mean
    G_std PSNR)."""
    os.makedirs(out_dir, exist_ok=True)
    ps, pt = [], []
    for idx, cam in enumerate(tqdm(cameras, desc="Comparing", disable=quiet, leave=False)):
        a = to_uint8(render(cam, student, pipe, bg)["render"].clamp(0, 1))
        b = to_uint8(render(cam, std, pipe, bg)["render"].clamp(0, 1))
        gt = cam.image[:3].permute(1, 2, 0).cpu().numpy()
        img, p1, p2 = compare_image(a, b, gt)
        write_png(os.path.join(out_dir, f"{idx:05d}.png"), img)
        ps.append(p1)
        pt.append(p2)
    return len(cameras), float(np.mean(ps)), float(np.mean(pt))
