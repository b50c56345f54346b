// Adam steps on the Gaussian parameters. adam_rows_: one parameter, only the rows (Gaussians) marked
// visible; other rows keep their value and moments. adam_multi_: every parameter group of a step in one
// launch (dense, or visible rows only). Bias corrections are computed on the host.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <string>

#include "api.h"

namespace dgr {
namespace {

constexpr int kMaxSegments = 8;

// One parameter tensor of a multi-tensor step, seen as [rows, D] (D = its elements per Gaussian).
struct AdamSegment {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  int64_t n;           // elements
  int64_t D;
  float step_size;     // lr / (1 - beta1^step)
  float inv_sqrt_bc2;  // 1 / sqrt(1 - beta2^step)
  bool vec;            // all four arrays 16-byte aligned: whole chunks move as float4
};

// Passed by value as a kernel argument: no device copy of the pointer table, so no extra launch.
struct AdamSegments {
  AdamSegment seg[kMaxSegments];
  int64_t begin[kMaxSegments + 1];  // offsets of each segment's 4-element chunks in the flattened range
  int count;
};

// torch.optim.Adam's order of operations: p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
__device__ __forceinline__ void adam_update(float& p, float g, float& m, float& v, float step_size,
                                            float inv_sqrt_bc2, float beta1, float beta2, float eps) {
  m = beta1 * m + (1.f - beta1) * g;
  v = beta2 * v + (1.f - beta2) * g * g;
  p -= step_size * m / (sqrtf(v) * inv_sqrt_bc2 + eps);
}

__global__ void adam_rows_kernel(float* __restrict__ param, const float* __restrict__ grad,
                                 float* __restrict__ exp_avg, float* __restrict__ exp_avg_sq,
                                 const bool* __restrict__ visible, int64_t n, int64_t D, float step_size,
                                 float beta1, float beta2, float eps, float inv_sqrt_bc2) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= n || !visible[i / D]) return;
  adam_update(param[i], grad[i], exp_avg[i], exp_avg_sq[i], step_size, inv_sqrt_bc2, beta1, beta2, eps);
}

// One thread per 4-element chunk of a segment (float4 loads and stores when aligned: the step is bound by
// memory bandwidth); rows not visible keep their value and moments.
__global__ void adam_multi_kernel(const AdamSegments segs, const bool* __restrict__ visible, float beta1,
                                  float beta2, float eps) {
  const int64_t total = segs.begin[segs.count];
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < total; c += stride) {
    int k = 0;
    while (c >= segs.begin[k + 1]) k++;  // at most kMaxSegments steps; segments are large and contiguous
    const AdamSegment& s = segs.seg[k];
    const int64_t i0 = (c - segs.begin[k]) * 4;
    if (s.vec && i0 + 4 <= s.n) {
      float4 p = *reinterpret_cast<const float4*>(s.param + i0);
      const float4 g = *reinterpret_cast<const float4*>(s.grad + i0);
      float4 m = *reinterpret_cast<const float4*>(s.exp_avg + i0);
      float4 v = *reinterpret_cast<const float4*>(s.exp_avg_sq + i0);
      float* pp[4] = {&p.x, &p.y, &p.z, &p.w};
      float* mm[4] = {&m.x, &m.y, &m.z, &m.w};
      float* vv[4] = {&v.x, &v.y, &v.z, &v.w};
      const float gg[4] = {g.x, g.y, g.z, g.w};
#pragma unroll
      for (int e = 0; e < 4; e++)
        if (visible == nullptr || visible[(i0 + e) / s.D])
          adam_update(*pp[e], gg[e], *mm[e], *vv[e], s.step_size, s.inv_sqrt_bc2, beta1, beta2, eps);
      *reinterpret_cast<float4*>(s.param + i0) = p;
      *reinterpret_cast<float4*>(s.exp_avg + i0) = m;
      *reinterpret_cast<float4*>(s.exp_avg_sq + i0) = v;
    } else {
      for (int64_t i = i0; i < min(i0 + 4, s.n); i++)
        if (visible == nullptr || visible[i / s.D])
          adam_update(s.param[i], s.grad[i], s.exp_avg[i], s.exp_avg_sq[i], s.step_size, s.inv_sqrt_bc2, beta1,
                      beta2, eps);
    }
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

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

void adam_multi_(std::vector<torch::Tensor> params, const std::vector<torch::Tensor>& grads,
                 std::vector<torch::Tensor> exp_avgs, std::vector<torch::Tensor> exp_avg_sqs,
                 const torch::Tensor& visible, const std::vector<double>& lrs, const std::vector<int64_t>& steps,
                 double beta1, double beta2, double eps) {
  const size_t n = params.size();
  // (the bound as text, as api.cu's chunks_flag says why)
  TORCH_CHECK(n <= (size_t)kMaxSegments, "adam_multi_ takes at most ", std::to_string(kMaxSegments), " parameters");
  TORCH_CHECK(grads.size() == n && exp_avgs.size() == n && exp_avg_sqs.size() == n && lrs.size() == n &&
                  steps.size() == n, "adam_multi_: one grad, exp_avg, exp_avg_sq, lr and step per parameter");
  if (n == 0) return;
  const bool sparse = visible.numel() > 0;
  const int64_t P = params[0].dim() > 0 ? params[0].size(0) : 0;
  if (sparse)
    TORCH_CHECK(visible.is_cuda() && visible.scalar_type() == torch::kBool && visible.is_contiguous() &&
                    visible.numel() == P, "visible must be a contiguous bool CUDA tensor with one entry per row");
  AdamSegments segs{};
  int64_t total = 0;
  for (size_t k = 0; k < n; k++) {
    check_operand(params[k], params[k], "param");
    check_operand(grads[k], params[k], "grad");
    check_operand(exp_avgs[k], params[k], "exp_avg");
    check_operand(exp_avg_sqs[k], params[k], "exp_avg_sq");
    TORCH_CHECK(steps[k] >= 1, "step must be >= 1");
    TORCH_CHECK(!sparse || params[k].size(0) == P, "with visible, every parameter needs one row per Gaussian");
    const int64_t rows = params[k].dim() > 0 ? params[k].size(0) : 1;
    const double bc1 = 1.0 - std::pow(beta1, (double)steps[k]);
    const double bc2 = 1.0 - std::pow(beta2, (double)steps[k]);
    AdamSegment& s = segs.seg[k];
    s = AdamSegment{params[k].data_ptr<float>(), grads[k].data_ptr<float>(), exp_avgs[k].data_ptr<float>(),
                    exp_avg_sqs[k].data_ptr<float>(), params[k].numel(), rows > 0 ? params[k].numel() / rows : 1,
                    (float)(lrs[k] / bc1), (float)(1.0 / std::sqrt(bc2)), false};
    s.vec = aligned16(s.param) && aligned16(s.grad) && aligned16(s.exp_avg) && aligned16(s.exp_avg_sq);
    segs.begin[k] = total;
    total += (s.n + 3) / 4;
  }
  segs.begin[n] = total;
  segs.count = (int)n;
  if (total == 0) return;
  const c10::cuda::CUDAGuard guard(params[0].device());
  const int threads = 256;
  // a grid-stride loop over a few waves of blocks: enough to fill the GPU, few blocks to schedule
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 132 * 16);
  adam_multi_kernel<<<blocks, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
      segs, sparse ? visible.data_ptr<bool>() : nullptr, (float)beta1, (float)beta2, (float)eps);
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "diff_gaussian_rasterization: adam_multi_: ", cudaGetErrorString(err));
}

}  // namespace dgr
