#include <torch/extension.h>

namespace sknn {
torch::Tensor distCUDA2(const torch::Tensor& points);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("distCUDA2", &sknn::distCUDA2,
        "Mean squared distance of each point [N,3] to its 3 nearest neighbours (exact; fewer if N < 4)");
}
