// Fused image loss of the training step, forward and backward: sum_k w_k [(1 - lambda) L1(x, y_k) +
// lambda (1 - SSIM(x, y_k))] of one render x [3, H, W] against K = 1 or 2 targets. Its specification is
// utils/loss_utils.py::photometric_loss: SSIM with an 11x11 Gaussian window (sigma 1.5), zero padding
// 'same' (conv2d padding=5), C1 = 0.01^2, C2 = 0.03^2, means over the 3HW values.
//
// Both kernels work on 32x16 output tiles of one channel (blockIdx.z), one thread per pixel: the tile and a
// 5-pixel halo (zeros outside the image) go to shared memory, a horizontal 11-tap pass runs over all
// 26 halo rows, then a vertical 11-tap pass gives each thread its blurred values.
//
// Forward: blurs x, x^2 and per target y, y^2, x y (the five SSIM moments), writes per-block partial sums
// (reduced by torch, no float atomics: deterministic) and, for the backward, the per-pixel derivatives of
// the loss with respect to the blurred moments that depend on x:
//   A = sum_k c_k dS_k/dmu1,  B = sum_k c_k dS_k/de11,  C_k = c_k dS_k/de12,  c_k = dL/dS_k = -lambda w_k / N
// (mu1 = blur(x), e11 = blur(x^2), e12 = blur(x y_k)). Backward: the blur is its own adjoint (symmetric
// window, and zero padding drops exactly the out-of-image terms), so
//   dL/dx = blur(A) + 2 x blur(B) + sum_k y_k blur(C_k) + sum_k (1 - lambda) w_k / N sign(x - y_k).
// tests/test_fused_loss.py emulates both kernels in PyTorch and checks them against autograd of the spec.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <cmath>
#include <vector>

#include "loss.h"

namespace dgr {
namespace {

constexpr int LT_W = 32;  // output tile of one block: a warp per row
constexpr int LT_H = 16;
constexpr int LOSS_THREADS = LT_W * LT_H;
constexpr int HALO = 5;  // window radius
constexpr int WIN = 2 * HALO + 1;
constexpr int IN_W = LT_W + 2 * HALO;  // input tile with its halo
constexpr int IN_H = LT_H + 2 * HALO;
constexpr int MAX_K = 2;
// the spec's Python constants, rounded to float as its float32 tensor arithmetic rounds them
constexpr float SSIM_C1 = (float)(0.01 * 0.01);
constexpr float SSIM_C2 = (float)(0.03 * 0.03);

// Passed by value (constant bank): the unrolled loops index it with compile-time constants.
struct LossParams {
  float g[WIN];             // 1D Gaussian window, normalised
  float l1_coef[MAX_K];     // (1 - lambda) w_k / N
  float ssim_coef[MAX_K];   // -lambda w_k / N = dL/dS_k at each pixel
  float loss_const;         // sum_k lambda w_k (the "1" of 1 - SSIM), added once, by block 0
  float inv_n;              // 1 / N, N = 3 H W
  int W, H;
  const float* y[MAX_K];    // targets [3, H, W]
};

// Tile of img (one channel [H, W]) and its halo into s[IN_H][IN_W]; zeros outside the image, as conv2d's
// zero padding.
__device__ __forceinline__ void load_tile(const float* __restrict__ img, int W, int H, int x0, int y0,
                                          float (*s)[IN_W]) {
  for (int i = threadIdx.x; i < IN_H * IN_W; i += LOSS_THREADS) {
    const int r = i / IN_W, c = i - r * IN_W;
    const int gy = y0 - HALO + r, gx = x0 - HALO + c;
    float v = 0.f;
    if (gx >= 0 && gx < W && gy >= 0 && gy < H) v = img[(int64_t)gy * W + gx];
    s[r][c] = v;
  }
}

// Sum of v over the block in a fixed order (warp shuffles, then the warps in turn): the result is the same
// on every run. Valid in thread 0.
template <int N>
__device__ __forceinline__ void block_sum(float (&v)[N], float (*s_red)[N]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int q = 0; q < N; q++) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v[q] += __shfl_xor_sync(0xffffffffu, v[q], off);
  }
  if (lane == 0) {
#pragma unroll
    for (int q = 0; q < N; q++) s_red[warp][q] = v[q];
  }
  __syncthreads();
  if (threadIdx.x == 0) {
#pragma unroll
    for (int q = 0; q < N; q++) {
      float s = 0.f;
      for (int w = 0; w < LOSS_THREADS / 32; w++) s += s_red[w][q];
      v[q] = s;
    }
  }
}

// partials [1 + 2K, num_blocks]: row 0 the block's share of the loss, rows 1 .. K its share of the L1
// means, rows 1+K .. 2K of the SSIM means. maps [2 + K, 3, H, W]: A, B, C_0 .. C_{K-1} (when GRAD).
template <int K, bool GRAD>
__global__ void __launch_bounds__(LOSS_THREADS) fused_loss_fwd_kernel(const LossParams p, const float* __restrict__ x,
                                                                      float* __restrict__ partials,
                                                                      float* __restrict__ maps) {
  constexpr int NQ = 2 + 3 * K;  // blurred moments: mu1, e11, then per target mu2, e22, e12
  constexpr int NR = 1 + 2 * K;  // per-block sums
  __shared__ float s_in[1 + K][IN_H][IN_W];  // x, then the targets
  __shared__ float s_h[NQ][IN_H][LT_W];       // the moments after the horizontal pass
  __shared__ float s_red[LOSS_THREADS / 32][NR];

  const int W = p.W, H = p.H;
  const int64_t HW = (int64_t)H * W;
  const int ch = blockIdx.z;
  const int x0 = blockIdx.x * LT_W, y0 = blockIdx.y * LT_H;
  load_tile(x + ch * HW, W, H, x0, y0, s_in[0]);
#pragma unroll
  for (int k = 0; k < K; k++) load_tile(p.y[k] + ch * HW, W, H, x0, y0, s_in[1 + k]);
  __syncthreads();

  // horizontal pass: rows 0 .. IN_H-1 of the input tile, output columns 0 .. LT_W-1 (input column c + j)
  for (int i = threadIdx.x; i < IN_H * LT_W; i += LOSS_THREADS) {
    const int r = i / LT_W, c = i - r * LT_W;
    float acc[NQ];
#pragma unroll
    for (int q = 0; q < NQ; q++) acc[q] = 0.f;
#pragma unroll
    for (int j = 0; j < WIN; j++) {
      const float g = p.g[j];
      const float a = s_in[0][r][c + j];
      acc[0] += g * a;
      acc[1] += g * (a * a);
#pragma unroll
      for (int k = 0; k < K; k++) {
        const float b = s_in[1 + k][r][c + j];
        acc[2 + 3 * k] += g * b;
        acc[3 + 3 * k] += g * (b * b);
        acc[4 + 3 * k] += g * (a * b);
      }
    }
#pragma unroll
    for (int q = 0; q < NQ; q++) s_h[q][r][c] = acc[q];
  }
  __syncthreads();

  // vertical pass: pixel (x0 + lx, y0 + ly) sums horizontal rows ly .. ly + 2 HALO
  const int lx = threadIdx.x % LT_W, ly = threadIdx.x / LT_W;
  const int px = x0 + lx, py = y0 + ly;
  float red[NR];
#pragma unroll
  for (int q = 0; q < NR; q++) red[q] = 0.f;
  if (px < W && py < H) {
    float m[NQ];
#pragma unroll
    for (int q = 0; q < NQ; q++) m[q] = 0.f;
#pragma unroll
    for (int i = 0; i < WIN; i++) {
      const float g = p.g[i];
#pragma unroll
      for (int q = 0; q < NQ; q++) m[q] += g * s_h[q][ly + i][lx];
    }
    const float xv = s_in[0][ly + HALO][lx + HALO];
    const float mu1 = m[0];
    const float mu1_sq = mu1 * mu1;
    const float s1 = m[1] - mu1_sq;
    float dA = 0.f, dB = 0.f;
    const int64_t o = ch * HW + (int64_t)py * W + px;
#pragma unroll
    for (int k = 0; k < K; k++) {
      const float yv = s_in[1 + k][ly + HALO][lx + HALO];
      const float mu2 = m[2 + 3 * k];
      const float mu2_sq = mu2 * mu2;
      const float mu12 = mu1 * mu2;
      const float s2 = m[3 + 3 * k] - mu2_sq;
      const float s12 = m[4 + 3 * k] - mu12;
      // the spec's expression and order: S = (a1 a2) / (b1 b2)
      const float a1 = 2.f * mu12 + SSIM_C1;
      const float a2 = 2.f * s12 + SSIM_C2;
      const float b1 = mu1_sq + mu2_sq + SSIM_C1;
      const float b2 = s1 + s2 + SSIM_C2;
      const float den = b1 * b2;
      const float S = (a1 * a2) / den;
      const float l1 = fabsf(xv - yv);
      red[0] += p.l1_coef[k] * l1 + p.ssim_coef[k] * S;
      red[1 + k] += l1;
      red[1 + K + k] += S;
      if (GRAD) {
        // along mu1: a1' = 2 mu2, a2' = -2 mu2, b1' = 2 mu1, b2' = -2 mu1; e11 only in b2; e12 only in a2 (x2)
        const float c = p.ssim_coef[k];
        const float inv = 1.f / den;
        dA += c * (2.f * mu2 * (a2 - a1) * inv - 2.f * mu1 * S * (1.f / b1 - 1.f / b2));
        dB -= c * S / b2;
        maps[(2 + k) * 3 * HW + o] = c * 2.f * a1 * inv;
      }
    }
    if (GRAD) {
      maps[o] = dA;
      maps[3 * HW + o] = dB;
    }
  }

  block_sum<NR>(red, s_red);
  if (threadIdx.x == 0) {
    const int nblocks = (int)(gridDim.x * gridDim.y * gridDim.z);
    const int b = (int)((blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x);
    partials[b] = b == 0 ? red[0] + p.loss_const : red[0];
#pragma unroll
    for (int q = 1; q < NR; q++) partials[q * nblocks + b] = red[q] * p.inv_n;
  }
}

// dx [3, H, W] = grad_loss * dL/dx from the forward's maps [2 + K, 3, H, W].
template <int K>
__global__ void __launch_bounds__(LOSS_THREADS) fused_loss_bwd_kernel(const LossParams p,
                                                                      const float* __restrict__ grad_loss,
                                                                      const float* __restrict__ x,
                                                                      const float* __restrict__ maps,
                                                                      float* __restrict__ dx) {
  constexpr int NM = 2 + K;
  __shared__ float s_in[NM][IN_H][IN_W];
  __shared__ float s_h[NM][IN_H][LT_W];

  const int W = p.W, H = p.H;
  const int64_t HW = (int64_t)H * W;
  const int ch = blockIdx.z;
  const int x0 = blockIdx.x * LT_W, y0 = blockIdx.y * LT_H;
  // maps outside the image are zero: the forward has no out-of-image pixels whose window reaches in
#pragma unroll
  for (int q = 0; q < NM; q++) load_tile(maps + (q * 3 + ch) * HW, W, H, x0, y0, s_in[q]);
  __syncthreads();

  for (int i = threadIdx.x; i < IN_H * LT_W; i += LOSS_THREADS) {
    const int r = i / LT_W, c = i - r * LT_W;
    float acc[NM];
#pragma unroll
    for (int q = 0; q < NM; q++) acc[q] = 0.f;
#pragma unroll
    for (int j = 0; j < WIN; j++) {
      const float g = p.g[j];
#pragma unroll
      for (int q = 0; q < NM; q++) acc[q] += g * s_in[q][r][c + j];
    }
#pragma unroll
    for (int q = 0; q < NM; q++) s_h[q][r][c] = acc[q];
  }
  __syncthreads();

  const int lx = threadIdx.x % LT_W, ly = threadIdx.x / LT_W;
  const int px = x0 + lx, py = y0 + ly;
  if (px >= W || py >= H) return;  // no block-wide synchronisation below
  float m[NM];
#pragma unroll
  for (int q = 0; q < NM; q++) m[q] = 0.f;
#pragma unroll
  for (int i = 0; i < WIN; i++) {
    const float g = p.g[i];
#pragma unroll
    for (int q = 0; q < NM; q++) m[q] += g * s_h[q][ly + i][lx];
  }
  const int64_t o = ch * HW + (int64_t)py * W + px;
  const float xv = x[o];
  float d = m[0] + 2.f * xv * m[1];
#pragma unroll
  for (int k = 0; k < K; k++) {
    const float yv = p.y[k][o];
    // torch's abs subgradient: sign(x - y), 0 where x == y
    const float sgn = (float)(xv > yv) - (float)(xv < yv);
    d += yv * m[2 + k] + p.l1_coef[k] * sgn;
  }
  dx[o] = *grad_loss * d;
}

void check_image(const torch::Tensor& t, const torch::Tensor& x, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.scalar_type() == torch::kFloat32, name, " must be a float32 CUDA tensor");
  TORCH_CHECK(t.device() == x.device(), name, " must be on the render's device");
  TORCH_CHECK(t.sizes() == x.sizes(), name, " must have the render's shape [3, H, W]");
}

// Checks the arguments and fills the parameters shared by the forward and the backward; targets are
// made contiguous into `keep` (whose storage the pointers in the result refer to).
LossParams make_params(const torch::Tensor& x, const std::vector<torch::Tensor>& targets,
                       const std::vector<double>& weights, double lambda_dssim, std::vector<torch::Tensor>& keep) {
  TORCH_CHECK(x.is_cuda() && x.scalar_type() == torch::kFloat32, "render must be a float32 CUDA tensor");
  TORCH_CHECK(x.dim() == 3 && x.size(0) == 3, "render must be [3, H, W]");
  TORCH_CHECK(x.size(1) > 0 && x.size(2) > 0, "render must not be empty");
  TORCH_CHECK(3 * x.size(1) * x.size(2) < (int64_t)1 << 31, "render too large for the fused loss");
  const int K = (int)targets.size();
  TORCH_CHECK(K >= 1 && K <= MAX_K, "the fused loss takes 1 or 2 targets");
  TORCH_CHECK((int)weights.size() == K, "one weight per target");
  LossParams p{};
  double g[WIN], gs = 0.0;
  for (int j = 0; j < WIN; j++) {
    const double d = j - HALO;
    g[j] = std::exp(-d * d / (2.0 * 1.5 * 1.5));
    gs += g[j];
  }
  for (int j = 0; j < WIN; j++) p.g[j] = (float)(g[j] / gs);
  p.H = (int)x.size(1);
  p.W = (int)x.size(2);
  const double n = 3.0 * p.H * p.W;
  p.inv_n = (float)(1.0 / n);
  double c = 0.0;
  keep.clear();
  for (int k = 0; k < K; k++) {
    check_image(targets[k], x, "target");
    keep.push_back(targets[k].contiguous());
    p.y[k] = keep.back().data_ptr<float>();
    p.l1_coef[k] = (float)((1.0 - lambda_dssim) * weights[k] / n);
    p.ssim_coef[k] = (float)(-lambda_dssim * weights[k] / n);
    c += lambda_dssim * weights[k];
  }
  p.loss_const = (float)c;
  return p;
}

dim3 loss_grid(const LossParams& p) { return dim3((p.W + LT_W - 1) / LT_W, (p.H + LT_H - 1) / LT_H, 3); }

void check_loss_launch(const char* where) {
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "diff_gaussian_rasterization: ", where, ": ", cudaGetErrorString(err));
}

}  // namespace

std::vector<torch::Tensor> fused_loss_forward(const torch::Tensor& render, const std::vector<torch::Tensor>& targets,
                                              const std::vector<double>& weights, double lambda_dssim,
                                              bool need_grad, bool with_stats) {
  std::vector<torch::Tensor> keep;
  const LossParams p = make_params(render, targets, weights, lambda_dssim, keep);
  const c10::cuda::CUDAGuard guard(render.device());
  const torch::Tensor x = render.contiguous();
  const int K = (int)targets.size();
  const dim3 grid = loss_grid(p);
  const int64_t nblocks = (int64_t)grid.x * grid.y * grid.z;
  const auto opts = x.options();
  torch::Tensor partials = torch::empty({1 + 2 * K, nblocks}, opts);
  torch::Tensor maps = need_grad ? torch::empty({2 + K, 3, p.H, p.W}, opts) : torch::empty({0}, opts);
  float* mp = need_grad ? maps.data_ptr<float>() : nullptr;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (K == 1) {
    auto kernel = need_grad ? fused_loss_fwd_kernel<1, true> : fused_loss_fwd_kernel<1, false>;
    kernel<<<grid, LOSS_THREADS, 0, stream>>>(p, x.data_ptr<float>(), partials.data_ptr<float>(), mp);
  } else {
    auto kernel = need_grad ? fused_loss_fwd_kernel<2, true> : fused_loss_fwd_kernel<2, false>;
    kernel<<<grid, LOSS_THREADS, 0, stream>>>(p, x.data_ptr<float>(), partials.data_ptr<float>(), mp);
  }
  check_loss_launch("fused_loss_forward");
  torch::Tensor loss = partials[0].sum();
  torch::Tensor stats = with_stats ? partials.narrow(0, 1, 2 * K).sum(1).view({2, K}) : torch::empty({0}, opts);
  return {loss, stats, maps};
}

torch::Tensor fused_loss_backward(const torch::Tensor& grad_loss, const torch::Tensor& render,
                                  const std::vector<torch::Tensor>& targets, const std::vector<double>& weights,
                                  double lambda_dssim, const torch::Tensor& maps) {
  std::vector<torch::Tensor> keep;
  const LossParams p = make_params(render, targets, weights, lambda_dssim, keep);
  const int K = (int)targets.size();
  TORCH_CHECK(maps.is_cuda() && maps.scalar_type() == torch::kFloat32 && maps.is_contiguous() &&
                  maps.dim() == 4 && maps.size(0) == 2 + K && maps.size(1) == 3 && maps.size(2) == p.H &&
                  maps.size(3) == p.W,
              "maps must be the forward's [2 + K, 3, H, W] float32 buffer");
  TORCH_CHECK(grad_loss.numel() == 1 && grad_loss.device() == render.device(),
              "grad_loss must be one value on the render's device");
  const c10::cuda::CUDAGuard guard(render.device());
  const torch::Tensor x = render.contiguous();
  const torch::Tensor gl = grad_loss.to(torch::kFloat32).contiguous();
  torch::Tensor dx = torch::empty_like(x);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  auto kernel = K == 1 ? fused_loss_bwd_kernel<1> : fused_loss_bwd_kernel<2>;
  kernel<<<loss_grid(p), LOSS_THREADS, 0, stream>>>(p, gl.data_ptr<float>(), x.data_ptr<float>(),
                                                    maps.data_ptr<float>(), dx.data_ptr<float>());
  check_loss_launch("fused_loss_backward");
  return dx;
}

}  // namespace dgr
