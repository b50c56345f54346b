"""LPIPS-VGG loading that never touches the network.

``lpips.LPIPS(net="vgg")`` asks torchvision for ImageNet VGG16 weights, which torchvision downloads
into torch.hub's checkpoint folder on first use. On an offline machine that download fails (or
hangs), so we do not let torchvision fetch anything: we build the LPIPS module with a randomly
initialised trunk and copy the VGG16 ``features`` weights in from the checkpoint file ourselves.
The result is the same network as ``lpips.LPIPS(net="vgg")`` with its pretrained trunk; the small
linear calibration layers ship inside the lpips package and are loaded by it as usual.

``load_lpips(device)`` returns ``(model, None)`` or ``(None, reason)`` where ``reason`` is one line
telling the user what is missing and how to fix it.
"""
import contextlib
import glob
import io
import os
import warnings

import torch

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1 file name


def vgg16_weights_file():
    """Name torchvision gives the ImageNet VGG16 checkpoint (falls back to the known name)."""
    try:
        from torchvision.models import VGG16_Weights

        return os.path.basename(VGG16_Weights.IMAGENET1K_V1.url)
    except Exception:  # pragma: no cover - very old / new torchvision
        return VGG16_FILE


def vgg16_weights_path():
    """Where torchvision looks for (and would download) the VGG16 weights. torchvision is asked for the file's name
    only when a VGG16 checkpoint of another name is in that folder: its import costs a second of every training
    run on a machine without the weights, where the answer is "missing" either way."""
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    known = os.path.join(folder, VGG16_FILE)
    if os.path.isfile(known) or not glob.glob(os.path.join(folder, "vgg16-*.pth")):
        return known
    return os.path.join(folder, vgg16_weights_file())


def _short(path):
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if home and home != "/" and path.startswith(home + os.sep) else path


@contextlib.contextmanager
def _quiet():
    """Silence the lpips package's prints and torchvision's deprecation warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def _features_state(ckpt):
    """Map VGG16 feature-layer index -> (weight, bias) from a torchvision checkpoint dict.

    Accepts a full torchvision VGG16 state dict (``features.N.weight``) or a features-only one
    (``N.weight``), optionally wrapped in ``{"state_dict": ...}``.
    """
    if isinstance(ckpt, dict) and "state_dict" in ckpt and isinstance(ckpt["state_dict"], dict):
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, dict):
        raise ValueError("not a state dict")
    out = {}
    for key, val in ckpt.items():
        parts = key.split(".")
        if parts[0] == "features":
            parts = parts[1:]
        if len(parts) == 2 and parts[0].isdigit() and parts[1] in ("weight", "bias"):
            out.setdefault(int(parts[0]), {})[parts[1]] = val
    return out


def load_lpips(device="cpu", weights_path=None):
    """LPIPS with the VGG trunk (as the paper), or ``(None, reason)`` when the trunk is unavailable.

    Never downloads: if the VGG16 checkpoint is not already in torch.hub's checkpoint folder (or at
    ``weights_path``) it returns at once with a one-line reason.
    """
    path = weights_path or vgg16_weights_path()
    name = os.path.basename(path)
    where = _short(os.path.dirname(path))
    if not os.path.isfile(path):
        return None, (f"VGG16 backbone weights not found in {where} ({name}); copy them there "
                      f"or run once online")
    try:
        import lpips
    except Exception as exc:  # pragma: no cover - lpips is a dependency
        return None, f"the lpips package could not be imported ({type(exc).__name__}: {exc})"
    try:
        with _quiet():
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        try:
            with _quiet():
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            return None, (f"VGG16 backbone weights {_short(path)} could not be read "
                          f"({type(exc).__name__}); replace the file with torchvision's {name}")
    try:
        feats = _features_state(ckpt)
    except ValueError:
        feats = {}
    try:
        with _quiet():
            # pnet_rand=True: torchvision builds an untrained VGG16 and downloads nothing;
            # the lpips linear layers (shipped in the package) are still loaded.
            model = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)
    except Exception as exc:  # pragma: no cover
        return None, f"LPIPS-VGG could not be built ({type(exc).__name__}: {exc})"
    trunk = model.net
    with torch.no_grad():
        for s in range(1, trunk.N_slices + 1):
            for idx, mod in getattr(trunk, f"slice{s}").named_children():
                if not isinstance(mod, torch.nn.Conv2d):
                    continue
                src = feats.get(int(idx), {})
                for pname in ("weight", "bias"):
                    dst = getattr(mod, pname)
                    val = src.get(pname)
                    if val is None or tuple(val.shape) != tuple(dst.shape):
                        return None, (f"VGG16 backbone weights {_short(path)} do not look like "
                                      f"torchvision's VGG16 (features.{idx}.{pname} missing or "
                                      f"mis-shaped); replace the file with torchvision's {name}")
                    dst.copy_(val.to(dst.dtype))
    del ckpt, feats
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, None
