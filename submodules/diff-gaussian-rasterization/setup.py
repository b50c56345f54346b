"""Build: pip install --no-build-isolation ./submodules/diff-gaussian-rasterization

Honours TORCH_CUDA_ARCH_LIST (e.g. "9.0") and MAX_JOBS; CUDA_HOME defaults to /usr/local/cuda.
"""
import os

if not os.environ.get("CUDA_HOME") and os.path.isdir("/usr/local/cuda"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"  # must be set before torch.utils.cpp_extension is imported

from setuptools import setup  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CUDAExtension  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
src = ["csrc/ext.cpp", "csrc/api.cu", "csrc/preprocess.cu", "csrc/preprocess_bwd.cu", "csrc/render.cu", "csrc/adam.cu",
       "csrc/loss.cu"]

setup(
    name="diff_gaussian_rasterization",
    version="0.1.0",
    description="Tile-based differentiable Gaussian rasterizer (CUDA), forward and backward",
    packages=["diff_gaussian_rasterization"],
    ext_modules=[
        CUDAExtension(
            name="diff_gaussian_rasterization._C",
            sources=src,
            include_dirs=[os.path.join(here, "csrc")],
            extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "-lineinfo"]},
        )
    ],
    cmdclass={"build_ext": BuildExtension},
)
