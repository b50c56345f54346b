// Exact mean squared distance to the 3 nearest neighbours of every point.
//
// Points are sorted along a 63-bit Morton curve; runs of 32 consecutive points form leaf boxes, runs of
// 32 boxes form the next level, and so on up to one root (an implicit 32-ary bounding-volume tree).
// Each query starts from the points next to it on the curve (a good first bound on the 3rd distance),
// then walks the tree and opens only boxes closer than its current 3rd-nearest distance. A box is never
// closer than the points it holds (also in float arithmetic), so the pruning is exact.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <cub/cub.cuh>
#include <vector>

namespace sknn {
namespace {

constexpr int FAN = 32;      // children per node, points per leaf
constexpr int WINDOW = 8;    // curve neighbours on each side used to seed the bound
constexpr int MAX_STACK = 16;

__device__ __forceinline__ uint64_t spread21(uint64_t v) {
  v &= 0x1fffffull;
  v = (v | v << 32) & 0x1f00000000ffffull;
  v = (v | v << 16) & 0x1f0000ff0000ffull;
  v = (v | v << 8) & 0x100f00f00f00f00full;
  v = (v | v << 4) & 0x10c30c30c30c30c3ull;
  v = (v | v << 2) & 0x1249249249249249ull;
  return v;
}

__global__ void morton_kernel(int N, const float* __restrict__ pts, const float* __restrict__ lo,
                              const float* __restrict__ hi, uint64_t* codes, int* idx) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N) return;
  const float ext = fmaxf(fmaxf(hi[0] - lo[0], hi[1] - lo[1]), fmaxf(hi[2] - lo[2], 1e-30f));
  const float s = 2097151.f / ext;
  uint64_t c[3];
#pragma unroll
  for (int k = 0; k < 3; k++) {
    const float u = fminf(fmaxf((pts[3 * i + k] - lo[k]) * s, 0.f), 2097151.f);  // NaN -> 0
    c[k] = (uint64_t)u;
  }
  codes[i] = spread21(c[0]) | (spread21(c[1]) << 1) | (spread21(c[2]) << 2);
  idx[i] = i;
}

__global__ void gather_kernel(int N, const float* __restrict__ pts, const int* __restrict__ order, float4* sorted) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N) return;
  const int j = order[i];
  sorted[i] = make_float4(pts[3 * j], pts[3 * j + 1], pts[3 * j + 2], 0.f);
}

// Leaf boxes from points.
__global__ void leaf_box_kernel(int N, int n_nodes, const float4* __restrict__ sorted, float4* bmin, float4* bmax) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= n_nodes) return;
  float4 mn = make_float4(INFINITY, INFINITY, INFINITY, 0.f), mx = make_float4(-INFINITY, -INFINITY, -INFINITY, 0.f);
  const int end = min(N, (b + 1) * FAN);
  for (int j = b * FAN; j < end; j++) {
    const float4 p = sorted[j];
    mn.x = fminf(mn.x, p.x); mn.y = fminf(mn.y, p.y); mn.z = fminf(mn.z, p.z);
    mx.x = fmaxf(mx.x, p.x); mx.y = fmaxf(mx.y, p.y); mx.z = fmaxf(mx.z, p.z);
  }
  bmin[b] = mn;
  bmax[b] = mx;
}

// Inner boxes from the level below.
__global__ void inner_box_kernel(int n_child, int n_nodes, const float4* __restrict__ cmin,
                                 const float4* __restrict__ cmax, float4* bmin, float4* bmax) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= n_nodes) return;
  float4 mn = make_float4(INFINITY, INFINITY, INFINITY, 0.f), mx = make_float4(-INFINITY, -INFINITY, -INFINITY, 0.f);
  const int end = min(n_child, (b + 1) * FAN);
  for (int j = b * FAN; j < end; j++) {
    const float4 a = cmin[j], c = cmax[j];
    mn.x = fminf(mn.x, a.x); mn.y = fminf(mn.y, a.y); mn.z = fminf(mn.z, a.z);
    mx.x = fmaxf(mx.x, c.x); mx.y = fmaxf(mx.y, c.y); mx.z = fmaxf(mx.z, c.z);
  }
  bmin[b] = mn;
  bmax[b] = mx;
}

struct Levels {
  int count;
  int n[12];       // nodes per level (0 = leaves)
  int offset[12];  // first node of each level in the box arrays
};

__device__ __forceinline__ float box_dist2(float4 q, float4 mn, float4 mx) {
  const float dx = fmaxf(fmaxf(mn.x - q.x, q.x - mx.x), 0.f);
  const float dy = fmaxf(fmaxf(mn.y - q.y, q.y - mx.y), 0.f);
  const float dz = fmaxf(fmaxf(mn.z - q.z, q.z - mx.z), 0.f);
  return dx * dx + dy * dy + dz * dz;
}

__device__ __forceinline__ float point_dist2(float4 q, float4 p) {
  const float dx = p.x - q.x, dy = p.y - q.y, dz = p.z - q.z;
  return dx * dx + dy * dy + dz * dz;
}

__device__ __forceinline__ void insert3(float d, float& b0, float& b1, float& b2) {
  if (d < b2) {
    if (d < b1) {
      b2 = b1;
      if (d < b0) {
        b1 = b0;
        b0 = d;
      } else {
        b1 = d;
      }
    } else {
      b2 = d;
    }
  }
}

__global__ void query_kernel(int N, const float4* __restrict__ sorted, const int* __restrict__ order,
                             const float4* __restrict__ bmin, const float4* __restrict__ bmax, const Levels lv,
                             float* __restrict__ out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N) return;
  const float4 q = sorted[i];
  float b0 = INFINITY, b1 = INFINITY, b2 = INFINITY;
  const int w0 = max(0, i - WINDOW), w1 = min(N - 1, i + WINDOW);
  for (int j = w0; j <= w1; j++)
    if (j != i) insert3(point_dist2(q, sorted[j]), b0, b1, b2);

  // stack of node ranges (level, first, last)
  int st_level[MAX_STACK], st_first[MAX_STACK], st_last[MAX_STACK];
  int sp = 0;
  const int top = lv.count - 1;
  st_level[0] = top;
  st_first[0] = 0;
  st_last[0] = lv.n[top] - 1;
  sp = 1;
  while (sp > 0) {
    const int level = st_level[sp - 1];
    const int node = st_first[sp - 1];
    if (node >= st_last[sp - 1]) sp--; else st_first[sp - 1] = node + 1;
    const int bi = lv.offset[level] + node;
    if (!(box_dist2(q, bmin[bi], bmax[bi]) < b2)) continue;
    if (level == 0) {
      const int end = min(N, (node + 1) * FAN);
      for (int j = node * FAN; j < end; j++) {
        if (j >= w0 && j <= w1) continue;  // already seen (or the query itself)
        insert3(point_dist2(q, sorted[j]), b0, b1, b2);
      }
    } else {
      st_level[sp] = level - 1;
      st_first[sp] = node * FAN;
      st_last[sp] = min(lv.n[level - 1], (node + 1) * FAN) - 1;
      sp++;
    }
  }
  float res;
  if (N >= 4) res = (b0 + b1 + b2) / 3.f;
  else if (N == 3) res = (b0 + b1) / 2.f;
  else if (N == 2) res = b0;
  else res = 0.f;
  out[order[i]] = res;
}

}  // namespace

torch::Tensor distCUDA2(const torch::Tensor& points_in) {
  TORCH_CHECK(points_in.is_cuda(), "distCUDA2: points must be a CUDA tensor");
  TORCH_CHECK(points_in.dim() == 2 && points_in.size(1) == 3, "distCUDA2: points must be [N, 3]");
  const at::cuda::CUDAGuard guard(points_in.device());
  const auto points = points_in.to(torch::kFloat32).contiguous();
  const int N = points.size(0);
  auto out = torch::zeros({N}, points.options());
  if (N <= 1) return out;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const auto iopt = points.options().dtype(torch::kInt32);
  const auto lopt = points.options().dtype(torch::kInt64);
  const auto bopt = points.options().dtype(torch::kUInt8);

  // bounding cube (finite points only matter for the curve; others are clamped)
  auto lo = std::get<0>(points.min(0)).contiguous();
  auto hi = std::get<0>(points.max(0)).contiguous();

  auto codes_in = torch::empty({N}, lopt), codes_out = torch::empty({N}, lopt);
  auto idx_in = torch::empty({N}, iopt), order = torch::empty({N}, iopt);
  const int threads = 256, blocks = (N + threads - 1) / threads;
  morton_kernel<<<blocks, threads, 0, stream>>>(N, points.data_ptr<float>(), lo.data_ptr<float>(),
                                                hi.data_ptr<float>(),
                                                reinterpret_cast<uint64_t*>(codes_in.data_ptr<int64_t>()),
                                                idx_in.data_ptr<int>());
  size_t temp_bytes = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, (const uint64_t*)nullptr, (uint64_t*)nullptr,
                                  (const int*)nullptr, (int*)nullptr, N, 0, 63, stream);
  auto temp = torch::empty({(int64_t)temp_bytes}, bopt);
  cub::DeviceRadixSort::SortPairs(temp.data_ptr(), temp_bytes,
                                  reinterpret_cast<const uint64_t*>(codes_in.data_ptr<int64_t>()),
                                  reinterpret_cast<uint64_t*>(codes_out.data_ptr<int64_t>()), idx_in.data_ptr<int>(),
                                  order.data_ptr<int>(), N, 0, 63, stream);
  auto sorted = torch::empty({N, 4}, points.options());
  float4* sp = reinterpret_cast<float4*>(sorted.data_ptr<float>());
  gather_kernel<<<blocks, threads, 0, stream>>>(N, points.data_ptr<float>(), order.data_ptr<int>(), sp);

  Levels lv;
  lv.count = 0;
  int total = 0, n = N;
  do {
    n = (n + FAN - 1) / FAN;
    TORCH_CHECK(lv.count < 12, "distCUDA2: too many points");
    lv.n[lv.count] = n;
    lv.offset[lv.count] = total;
    total += n;
    lv.count++;
  } while (n > 1);
  auto bmin = torch::empty({total, 4}, points.options()), bmax = torch::empty({total, 4}, points.options());
  float4* mn = reinterpret_cast<float4*>(bmin.data_ptr<float>());
  float4* mx = reinterpret_cast<float4*>(bmax.data_ptr<float>());
  leaf_box_kernel<<<(lv.n[0] + 255) / 256, 256, 0, stream>>>(N, lv.n[0], sp, mn, mx);
  for (int l = 1; l < lv.count; l++)
    inner_box_kernel<<<(lv.n[l] + 255) / 256, 256, 0, stream>>>(lv.n[l - 1], lv.n[l], mn + lv.offset[l - 1],
                                                                 mx + lv.offset[l - 1], mn + lv.offset[l],
                                                                 mx + lv.offset[l]);
  query_kernel<<<blocks, threads, 0, stream>>>(N, sp, order.data_ptr<int>(), mn, mx, lv, out.data_ptr<float>());
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "distCUDA2: ", cudaGetErrorString(err));
  return out;
}

}  // namespace sknn
