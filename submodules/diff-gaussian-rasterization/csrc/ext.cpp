#include <torch/extension.h>

#include "api.h"
#include "loss.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rasterize_forward", &dgr::rasterize_forward, "Tile rasterizer forward");
  m.def("rasterize_backward", &dgr::rasterize_backward, "Tile rasterizer backward");
  m.def("render_chunks", &dgr::render_chunks, "Depth chunks per tile of the render forward and backward");
  m.def("render_flags", &dgr::render_flags, "The render kernels' choices the environment flags make, by flag");
  m.def("adam_rows_", &dgr::adam_rows_, "Adam step on the visible rows of a parameter (in place)");
  m.def("adam_multi_", &dgr::adam_multi_, "Adam step on several parameters in one launch (in place)");
  m.def("preprocess_forward", &dgr::preprocess_forward, "Forward preprocessing kernel alone (stage tests)");
  m.def("mark_visible", &dgr::mark_visible, "Gaussians in front of the near plane");
  m.def("fused_loss_forward", &dgr::fused_loss_forward, "Fused L1 + SSIM image loss, forward");
  m.def("fused_loss_backward", &dgr::fused_loss_backward, "Fused L1 + SSIM image loss, gradient to the render");
}
