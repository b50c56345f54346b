"""metrics.py: PSNR/SSIM/LPIPS per view and mean, JSON outputs, offline LPIPS, input errors."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import metrics
from utils.errors import run_cli
from utils.image_utils import from_uint8, psnr
from utils.loss_utils import ssim
from utils import lpips_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IDENTICAL = ("00000.png", "00002.png")


# ----------------------------------------------------------------------------------------------
# helpers

def _structured(rng, h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin(xx / 3.0 + yy / 5.0)], axis=2)
    base += 0.1 * rng.standard_normal((h, w, 3))
    return np.clip(base * 255, 0, 255).round().astype(np.uint8)


def _write_rgb(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))


def make_model(root, its=(100,), n=5, h=40, w=48, split="test", seed=0):
    """Fake render.py output; views 0 and 2 are identical pairs. Returns {it: {name: (r, g)}} (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    out = {}
    for it in its:
        d = os.path.join(root, split, f"ours_{it}")
        out[it] = {}
        for i in range(n):
            name = f"{i:05d}.png"
            gt = _structured(rng, h, w)
            if name in IDENTICAL:
                r = gt.copy()
            else:
                noise = rng.normal(0, 4 + 6 * i, gt.shape)
                r = np.clip(gt.astype(np.float64) + noise, 0, 255).round().astype(np.uint8)
            _write_rgb(os.path.join(d, "renders", name), r)
            _write_rgb(os.path.join(d, "gt", name), gt)
            out[it][name] = (r, gt)
    return out


def strict_json(path):
    """Load JSON refusing Infinity / NaN (what json.dump would write for non-finite floats)."""
    def bad(c):
        raise ValueError(f"non-finite constant {c} in {path}")
    with open(path) as f:
        return json.load(f, parse_constant=bad)


def gaussian_window_np(size=11, sigma=1.5):
    x = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    return np.outer(g, g)


def filter_same_np(img, win):
    """Zero-padded 'same' 2-D correlation (the window is symmetric, so = convolution)."""
    k = win.shape[0]
    p = k // 2
    h, w = img.shape
    pad = np.zeros((h + 2 * p, w + 2 * p))
    pad[p:p + h, p:p + w] = img
    out = np.zeros((h, w))
    for dy in range(k):
        for dx in range(k):
            out += win[dy, dx] * pad[dy:dy + h, dx:dx + w]
    return out


def ssim_np(a, b):
    """Float64 SSIM of [C, H, W] arrays in [0, 1]: Gaussian 11 / 1.5, zero padding, C1 0.01^2, C2 0.03^2."""
    C1, C2 = 0.01 ** 2, 0.03 ** 2
    win = gaussian_window_np()
    vals = []
    for x, y in zip(np.asarray(a, np.float64), np.asarray(b, np.float64)):
        mx, my = filter_same_np(x, win), filter_same_np(y, win)
        sxx = filter_same_np(x * x, win) - mx * mx
        syy = filter_same_np(y * y, win) - my * my
        sxy = filter_same_np(x * y, win) - mx * my
        m = ((2 * mx * my + C1) * (2 * sxy + C2)) / ((mx * mx + my * my + C1) * (sxx + syy + C2))
        vals.append(m)
    return float(np.mean(vals))


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """torch.hub dir with no checkpoints; any download attempt fails the test."""
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))

    def no_download(*a, **k):
        raise AssertionError("metrics tried to download weights")
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    return hub


# ----------------------------------------------------------------------------------------------
# SSIM / PSNR definitions

@pytest.mark.parametrize("shape", [(3, 32, 40), (3, 17, 23), (1, 7, 9)])
def test_ssim_matches_float64_numpy_reference(shape):
    rng = np.random.default_rng(1)
    a = rng.random(shape)
    b = np.clip(0.6 * a + 0.4 * rng.random(shape), 0, 1)  # correlated, not identical
    ref = ssim_np(a, b)
    got64 = ssim(torch.from_numpy(a), torch.from_numpy(b)).item()
    got32 = ssim(torch.from_numpy(a).float(), torch.from_numpy(b).float()).item()
    assert got64 == pytest.approx(ref, abs=1e-10)
    assert got32 == pytest.approx(ref, abs=2e-5)
    assert ssim_np(a, a) == pytest.approx(1.0, abs=1e-12)


def test_read_image_rgba_gray_16bit(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((5, 6, 1), 7, np.uint8)], axis=2)
    cv2.imwrite(str(tmp_path / "a.png"), rgba[:, :, [2, 1, 0, 3]])
    t = metrics.read_image(str(tmp_path / "a.png"))
    assert torch.equal(t, from_uint8(rgb))
    gray = rgb[:, :, 0]
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    t = metrics.read_image(str(tmp_path / "g.png"))
    assert t.shape == (3, 5, 6) and torch.equal(t[0], t[2])
    cv2.imwrite(str(tmp_path / "w.png"), np.full((4, 4, 3), 65535, np.uint16))
    assert torch.all(metrics.read_image(str(tmp_path / "w.png")) == 1.0)


# ----------------------------------------------------------------------------------------------
# end to end

def test_skip_lpips_results_match_direct(tmp_path, capsys):
    model = tmp_path / "model"
    data = make_model(str(model))
    ret = metrics.main(["-m", str(model), "--skip_lpips", "--device", "cpu", "--batch_size", "2"])
    out = capsys.readouterr().out
    assert "--skip_lpips" in out and out.count("LPIPS skipped") == 1

    results = strict_json(model / "results.json")
    per_view = strict_json(model / "per_view.json")
    assert list(results) == ["ours_100"] and list(per_view) == ["ours_100"]
    assert ret[str(model)] == results
    pv = per_view["ours_100"]
    assert set(pv) == {"SSIM", "PSNR", "LPIPS"} and pv["LPIPS"] is None
    assert sorted(pv["PSNR"]) == sorted(data[100]) == sorted(pv["SSIM"])
    for name, (r, g) in data[100].items():
        rt, gt = from_uint8(r), from_uint8(g)
        assert pv["PSNR"][name] == pytest.approx(psnr(rt, gt).item(), rel=1e-6)
        assert pv["SSIM"][name] == pytest.approx(ssim(rt, gt).item(), abs=1e-6)
        assert pv["SSIM"][name] == pytest.approx(ssim_np(rt.numpy(), gt.numpy()), abs=2e-5)
        if name in IDENTICAL:
            assert pv["SSIM"][name] == 1.0
            assert math.isfinite(pv["PSNR"][name]) and pv["PSNR"][name] == pytest.approx(200.0, abs=1e-3)
        else:
            assert 10 < pv["PSNR"][name] < 60 and pv["SSIM"][name] < 1.0
    res = results["ours_100"]
    assert res["LPIPS"] is None
    assert res["PSNR"] == pytest.approx(np.mean(list(pv["PSNR"].values())), rel=1e-12)
    assert res["SSIM"] == pytest.approx(np.mean(list(pv["SSIM"].values())), rel=1e-12)
    # atomic writes leave no temp files behind
    assert sorted(p.name for p in model.iterdir()) == ["per_view.json", "results.json", "results.md", "test"]


def test_lpips_missing_weights_offline(tmp_path, capsys, empty_hub):
    model = tmp_path / "model"
    make_model(str(model), n=3)
    lp, reason = lpips_utils.load_lpips("cpu")
    assert lp is None and "vgg16-397923af.pth" in reason
    metrics.main(["-m", str(model), "--device", "cpu"])
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if "LPIPS skipped" in ln]
    assert len(lines) == 1
    assert "vgg16-397923af.pth" in lines[0] and "PSNR/SSIM are still written" in lines[0]
    assert "Setting up" not in out and "Loading model" not in out  # lpips chatter suppressed
    res = strict_json(model / "results.json")["ours_100"]
    assert res["LPIPS"] is None and res["PSNR"] > 0 and 0 < res["SSIM"] <= 1
    pv = strict_json(model / "per_view.json")["ours_100"]
    assert pv["LPIPS"] is None and len(pv["PSNR"]) == 3


def test_missing_weights_are_found_missing_without_importing_torchvision(tmp_path):
    # (a subprocess: this one may have imported torchvision already; its import is a second of every GPU run)
    code = ("import sys; from utils.lpips_utils import load_lpips; net, reason = load_lpips('cpu'); "
            "print(net is None, 'vgg16-397923af.pth' in reason, 'torchvision' in sys.modules)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True,
                         env=dict(os.environ, TORCH_HOME=str(tmp_path / "hub"))).stdout.split()
    assert out == ["True", "True", "False"]


def test_a_vgg16_checkpoint_of_another_name_asks_torchvision_for_its_name(empty_hub, monkeypatch):
    ck = empty_hub / "checkpoints"
    ck.mkdir()
    (ck / "vgg16-0000.pth").write_bytes(b"")
    monkeypatch.setattr(lpips_utils, "vgg16_weights_file", lambda: "vgg16-0000.pth")
    assert lpips_utils.vgg16_weights_path() == str(ck / "vgg16-0000.pth")
    (ck / "vgg16-0000.pth").unlink()
    assert lpips_utils.vgg16_weights_path() == str(ck / "vgg16-397923af.pth")


# (requirements.txt installs lpips; a machine without it, as the GPU machines without a registry, skips what needs it)
needs_lpips = pytest.mark.skipif(importlib.util.find_spec("lpips") is None, reason="the lpips package is not installed")


def test_lpips_without_the_package_is_skipped_with_the_reason(tmp_path, capsys, empty_hub, monkeypatch):
    """Weights present but no lpips package: PSNR/SSIM are written, LPIPS is null, and one line says why."""
    ck = empty_hub / "checkpoints"
    ck.mkdir()
    torch.save({}, ck / "vgg16-397923af.pth")
    monkeypatch.setitem(sys.modules, "lpips", None)  # (import lpips then raises ImportError)
    model = tmp_path / "model"
    make_model(str(model), n=2)
    metrics.main(["-m", str(model), "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.count("LPIPS skipped") == 1 and "the lpips package could not be imported" in out
    res = strict_json(model / "results.json")["ours_100"]
    assert res["LPIPS"] is None and res["PSNR"] > 0 and res["SSIM"] > 0


@needs_lpips
def test_lpips_bad_checkpoint_is_skipped(tmp_path, capsys, empty_hub):
    ck = empty_hub / "checkpoints"
    ck.mkdir()
    torch.save({"not": torch.zeros(3)}, ck / "vgg16-397923af.pth")
    model = tmp_path / "model"
    make_model(str(model), n=2)
    metrics.main(["-m", str(model), "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.count("LPIPS skipped") == 1 and "do not look like" in out
    assert strict_json(model / "results.json")["ours_100"]["LPIPS"] is None


@needs_lpips
def test_lpips_with_weights_present(tmp_path, capsys, empty_hub):
    """A (random) VGG16 checkpoint in the hub dir is used without any download; values = direct LPIPS."""
    cfg = [3, 64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    gen = torch.Generator().manual_seed(0)
    sd, idx, cin = {}, 0, None
    for c in cfg:
        if c == "M":
            idx += 1
            continue
        if cin is None:
            cin = c
            continue
        sd[f"features.{idx}.weight"] = torch.randn(c, cin, 3, 3, generator=gen) * math.sqrt(2 / (9 * cin))
        sd[f"features.{idx}.bias"] = torch.randn(c, generator=gen) * 0.01
        cin, idx = c, idx + 2  # conv, relu
    ck = empty_hub / "checkpoints"
    ck.mkdir()
    torch.save(sd, ck / "vgg16-397923af.pth")

    model = tmp_path / "model"
    data = make_model(str(model), n=3, h=32, w=32)
    metrics.main(["-m", str(model), "--device", "cpu"])
    assert "LPIPS skipped" not in capsys.readouterr().out
    pv = strict_json(model / "per_view.json")["ours_100"]
    res = strict_json(model / "results.json")["ours_100"]

    lp, reason = lpips_utils.load_lpips("cpu")
    assert reason is None
    assert torch.equal(getattr(lp.net.slice1, "0").weight, sd["features.0.weight"])
    assert torch.equal(getattr(lp.net.slice5, "28").bias, sd["features.28.bias"])
    for name, (r, g) in data[100].items():
        with torch.no_grad():
            want = lp(from_uint8(r)[None] * 2 - 1, from_uint8(g)[None] * 2 - 1).item()
        assert pv["LPIPS"][name] == pytest.approx(want, rel=1e-4, abs=1e-6)
        if name in IDENTICAL:
            assert pv["LPIPS"][name] == pytest.approx(0.0, abs=1e-6)
        else:
            assert pv["LPIPS"][name] > 0
    assert res["LPIPS"] == pytest.approx(np.mean(list(pv["LPIPS"].values())), rel=1e-12)


def test_several_iterations_and_train_split(tmp_path):
    model = tmp_path / "model"
    make_model(str(model), its=(2000, 100), n=2)
    make_model(str(model), its=(7,), n=2, split="train", seed=3)
    metrics.main(["-m", str(model), "--skip_lpips", "--device", "cpu"])
    assert list(strict_json(model / "results.json")) == ["ours_100", "ours_2000"]
    metrics.main(["-m", str(model), "--skip_lpips", "--device", "cpu", "--split", "train"])
    assert list(strict_json(model / "results_train.json")) == ["ours_7"]
    assert list(strict_json(model / "per_view_train.json")) == ["ours_7"]
    assert list(strict_json(model / "results.json")) == ["ours_100", "ours_2000"]  # untouched


# ----------------------------------------------------------------------------------------------
# input errors: one line, exit status 2

def _run_err(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(metrics.main, argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    return err


def test_mismatched_names_exit_2(tmp_path, capsys):
    model = tmp_path / "model"
    make_model(str(model), n=3)
    os.remove(model / "test" / "ours_100" / "gt" / "00001.png")
    err = _run_err(["-m", str(model), "--skip_lpips", "--device", "cpu"], capsys)
    assert os.path.join(str(model), "test", "ours_100") in err and "00001.png" in err
    assert not (model / "results.json").exists()


def test_mismatched_sizes_exit_2(tmp_path, capsys):
    model = tmp_path / "model"
    make_model(str(model), n=3)
    _write_rgb(str(model / "test" / "ours_100" / "gt" / "00002.png"), np.zeros((10, 12, 3), np.uint8))
    err = _run_err(["-m", str(model), "--skip_lpips", "--device", "cpu"], capsys)
    assert os.path.join(str(model), "test", "ours_100") in err and "00002.png" in err
    assert not (model / "results.json").exists()


def test_no_renders_exit_2(tmp_path, capsys):
    model = tmp_path / "model"
    (model / "test").mkdir(parents=True)
    err = _run_err(["-m", str(model), "--skip_lpips"], capsys)
    assert f"no renders in {os.path.join(str(model), 'test')}: run render.py -m {model} first" in err


def test_runs_as_script_from_elsewhere(tmp_path):
    model = tmp_path / "model"
    make_model(str(model), n=2)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "metrics.py"), "-m", str(model),
                           "--skip_lpips", "--device", "cpu"],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "PSNR" in proc.stdout
    assert strict_json(model / "results.json")["ours_100"]["LPIPS"] is None
    bad = subprocess.run([sys.executable, os.path.join(REPO, "metrics.py"), "-m", str(tmp_path / "nope")],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_two_target_photometric_loss_equals_two_separate_losses():
    from utils.loss_utils import photometric_loss
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 21, 34, generator=g, dtype=torch.float64, requires_grad=True)
    gt, teacher = (torch.rand(3, 21, 34, generator=g, dtype=torch.float64) for _ in range(2))
    fused = photometric_loss(x, gt, 0.2, (teacher, 0.4))
    apart = photometric_loss(x, gt, 0.2) + 0.4 * photometric_loss(x, teacher, 0.2)
    torch.testing.assert_close(fused, apart)
    torch.testing.assert_close(torch.autograd.grad(fused, x)[0], torch.autograd.grad(apart, x)[0])
    torch.testing.assert_close(ssim(x, gt), ssim(gt, x))
