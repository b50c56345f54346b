"""The CUDA rasterizer package (submodules/diff-gaussian-rasterization) on any machine, built or not.

Its pure-Python modules need no compiled extension: ``contract`` (settings, constants, stats request, input checks,
shared with the PyTorch rasterizer) and ``reference`` (the readable per-stage reference rasterizer). An installed
copy of the package is used when it has them; otherwise (nothing installed, as on a CPU-only machine, or a copy
installed before they existed) they are read from the source folder of this checkout.
"""
import importlib.util
import os
import sys

SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "submodules",
                      "diff-gaussian-rasterization")


def _import_package():
    try:
        import diff_gaussian_rasterization as pkg  # noqa: PLC0415
    except ImportError:  # not installed, or an old install whose extension does not load here
        sys.path.insert(0, SOURCE)
        import diff_gaussian_rasterization as pkg  # noqa: PLC0415
    folder = os.path.join(SOURCE, "diff_gaussian_rasterization")
    if importlib.util.find_spec("diff_gaussian_rasterization.contract") is None and folder not in pkg.__path__:
        pkg.__path__.append(folder)  # an install older than the pure-Python modules: they come from the checkout
    return pkg


package = _import_package()

from diff_gaussian_rasterization import contract, reference  # noqa: E402,F401 (after the path is settled)


def has_kernels():
    """True where the package's compiled extension loaded (it is None in a source tree that was not built)."""
    return getattr(package, "_C", None) is not None
