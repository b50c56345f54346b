// Adam step over the rows (Gaussians) marked visible; other rows keep their value and moments.
// One thread per element of the [P, D] parameter; bias corrections are computed on the host.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "api.h"

namespace dgr {
namespace {

__global__ void adam_rows_kernel(float* __restrict__ param, const float* __restrict__ grad,
                                 float* __restrict__ exp_avg, float* __restrict__ exp_avg_sq,
                                 const bool* __restrict__ visible, int64_t n, int64_t D, float step_size,
                                 float beta1, float beta2, float eps, float inv_sqrt_bc2) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= n || !visible[i / D]) return;
  const float g = grad[i];
  const float m = beta1 * exp_avg[i] + (1.f - beta1) * g;
  const float v = beta2 * exp_avg_sq[i] + (1.f - beta2) * g * g;
  exp_avg[i] = m;
  exp_avg_sq[i] = v;
  // torch.optim.Adam's order of operations: p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
  param[i] -= step_size * m / (sqrtf(v) * inv_sqrt_bc2 + eps);
}

void check_operand(const torch::Tensor& t, const torch::Tensor& param, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(), name,
              " must be a contiguous float32 CUDA tensor");
  TORCH_CHECK(t.sizes() == param.sizes(), name, " must have the parameter's shape");
}

}  // namespace

void adam_rows_(torch::Tensor& param, const torch::Tensor& grad, torch::Tensor& exp_avg,
                torch::Tensor& exp_avg_sq, const torch::Tensor& visible, double lr, double beta1, double beta2,
                double eps, int64_t step) {
  check_operand(param, param, "param");
  check_operand(grad, param, "grad");
  check_operand(exp_avg, param, "exp_avg");
  check_operand(exp_avg_sq, param, "exp_avg_sq");
  TORCH_CHECK(step >= 1, "step must be >= 1");
  const int64_t P = param.dim() > 0 ? param.size(0) : 0;
  TORCH_CHECK(visible.is_cuda() && visible.scalar_type() == torch::kBool && visible.numel() == P,
              "visible must be a bool CUDA tensor with one entry per row");
  const int64_t n = param.numel();
  if (n == 0) return;
  const c10::cuda::CUDAGuard guard(param.device());
  const double bc1 = 1.0 - std::pow(beta1, (double)step);
  const double bc2 = 1.0 - std::pow(beta2, (double)step);
  const int threads = 256;
  const int64_t blocks = (n + threads - 1) / threads;
  adam_rows_kernel<<<blocks, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
      param.data_ptr<float>(), grad.data_ptr<float>(), exp_avg.data_ptr<float>(), exp_avg_sq.data_ptr<float>(),
      visible.contiguous().data_ptr<bool>(), n, n / P, (float)(lr / bc1), (float)beta1, (float)beta2,
      (float)eps, (float)(1.0 / std::sqrt(bc2)));
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "diff_gaussian_rasterization: adam_rows_: ", cudaGetErrorString(err));
}

}  // namespace dgr
