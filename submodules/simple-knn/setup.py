"""Build: pip install --no-build-isolation ./submodules/simple-knn

Honours TORCH_CUDA_ARCH_LIST (e.g. "9.0") and MAX_JOBS; CUDA_HOME defaults to /usr/local/cuda.
"""
import os

if not os.environ.get("CUDA_HOME") and os.path.isdir("/usr/local/cuda"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"  # must be set before torch.utils.cpp_extension is imported

from setuptools import setup  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CUDAExtension  # noqa: E402

setup(
    name="simple_knn",
    version="0.1.0",
    description="Exact mean squared distance to the 3 nearest neighbours (CUDA)",
    packages=["simple_knn"],
    ext_modules=[
        CUDAExtension(
            name="simple_knn._C",
            sources=["csrc/ext.cpp", "csrc/knn.cu"],
            extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3"]},
        )
    ],
    cmdclass={"build_ext": BuildExtension},
)
