// Forward preprocessing (projection, SH colour, tile counting) and the binning helpers.
#include <algorithm>

#include "geometry.cuh"
#include "kernels.h"

namespace dgr {

// Geometry of Gaussian i: culling, 2D mean, conic, effective opacity, radius. False when culled.
__device__ __forceinline__ bool project_gaussian(int i, const float* __restrict__ means3D,
                                                 const float* __restrict__ scales,
                                                 const float* __restrict__ rotations,
                                                 const float* __restrict__ opacities,
                                                 const float* __restrict__ cov3D_precomp, const Cam& cam, float3& p,
                                                 float2& m, float4& co, float& z, int& rad) {
  // rows with any non-finite input are culled (as the reference does)
  p = make_float3(means3D[3 * i], means3D[3 * i + 1], means3D[3 * i + 2]);
  const float opacity = opacities[i];
  bool ok = finitef(p.x) && finitef(p.y) && finitef(p.z) && finitef(opacity);
  float Sg[6];
  if (cov3D_precomp != nullptr) {
#pragma unroll
    for (int k = 0; k < 6; k++) {
      Sg[k] = cov3D_precomp[6 * i + k];
      ok = ok && finitef(Sg[k]);
    }
  } else {
    float s[3], q[4], R[9], qn[4], qnorm;
#pragma unroll
    for (int k = 0; k < 3; k++) {
      s[k] = scales[3 * i + k];
      ok = ok && finitef(s[k]);
      s[k] *= cam.scale_modifier;
    }
#pragma unroll
    for (int k = 0; k < 4; k++) {
      q[k] = rotations[4 * i + k];
      ok = ok && finitef(q[k]);
    }
    if (!ok) return false;
    cov3d_from_scale_rot(s, q, Sg, R, qn, qnorm);
  }
  if (!ok) return false;

  const float3 t = view_point(cam.view, p);
  if (!(t.z > NEAR_Z)) return false;
  const float4 ph = proj_point(cam.proj, p);
  const float pw = 1.f / (ph.w + 1e-7f);
  m = make_float2(((ph.x * pw + 1.f) * cam.W - 1.f) * 0.5f, ((ph.y * pw + 1.f) * cam.H - 1.f) * 0.5f);
  if (!(finitef(m.x) && finitef(m.y))) return false;

  const Cov2D cv = project_cov(cam, t, Sg);
  const float a = cv.a0 + DILATION, c = cv.c0 + DILATION, b = cv.b;
  const float det = a * c - b * b;
  if (!(det > 0.f) || !finitef(det)) return false;
  const float idet = 1.f / det;
  co = make_float4(c * idet, -b * idet, a * idet, opacity);
  if (!(finitef(co.x) && finitef(co.y) && finitef(co.z))) return false;
  if (cam.antialiasing) {
    const float det0 = cv.a0 * cv.c0 - b * b;
    co.w = opacity * sqrtf(fmaxf(AA_MIN_RATIO, det0 / det));
  }
  const float mid = 0.5f * (a + c);
  const float disc = sqrtf(fmaxf(0.1f, mid * mid - det));
  const float radius = ceilf(3.f * sqrtf(fmaxf(mid + disc, mid - disc)));
  if (!finitef(radius)) return false;
  int x0, y0, x1, y1;
  tile_rect(m, radius, cam.tiles_x, cam.tiles_y, x0, y0, x1, y1);
  if ((x1 - x0) * (y1 - y0) == 0) return false;
  z = t.z;
  rad = (int)radius;
  return true;
}

__global__ void __launch_bounds__(PRE_BLOCK) preprocess_fwd_kernel(
    int P, int deg, int M, bool sh_fast, const float* __restrict__ means3D, const float* __restrict__ scales,
    const float* __restrict__ rotations, const float* __restrict__ opacities, const float* __restrict__ shs,
    const float* __restrict__ shs_rest, const float* __restrict__ colors_precomp,
    const float* __restrict__ cov3D_precomp, const Cam cam, int* radii, Splat* splats, uint32_t* depth_keys,
    int* depth_index, int* tiles_touched, int* rank) {
  __shared__ float s_sh[PRE_BLOCK / 32][32 * SH_PAD];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float3 p;
  float2 m;
  float4 co;
  float z = 0.f;
  int rad = 0;
  bool vis = i < P && project_gaussian(i, means3D, scales, rotations, opacities, cov3D_precomp, cam, p, m, co, z, rad);

  float3 col = make_float3(0.f, 0.f, 0.f);
  if (colors_precomp != nullptr) {
    if (vis) {
      col = make_float3(colors_precomp[3 * i], colors_precomp[3 * i + 1], colors_precomp[3 * i + 2]);
      vis = usable_color(col);
    }
  } else {
    const float* sh;
    if (sh_fast) {  // M == 16: the warp stages its 32 rows through shared memory with coalesced loads
      warp_load_sh(shs, shs_rest, i - lane, P, vis, s_sh[warp], lane);  // (culled rows: not read)
      __syncwarp();
      sh = s_sh[warp] + lane * SH_PAD;
    } else {
      sh = shs + (size_t)i * M * 3;
    }
    if (vis) {
      bool shok = true;  // (no short cut, unrolled: the loads issue 16 at a time instead of each after the last's test)
#pragma unroll 16
      for (int k = 0; k < M * 3; k++) shok &= finitef(sh[k]);
      float3 d = make_float3(p.x - cam.campos[0], p.y - cam.campos[1], p.z - cam.campos[2]);
      const float inv = 1.f / fmaxf(sqrtf(d.x * d.x + d.y * d.y + d.z * d.z), 1e-12f);
      float bs[16];
      sh_basis(deg, d.x * inv, d.y * inv, d.z * inv, bs);
      const int K = (deg + 1) * (deg + 1);
      float r = 0.f, g = 0.f, bl = 0.f;
#pragma unroll
      for (int k = 0; k < 16; k++) {  // unrolled with a guard: keeps bs[] in registers
        if (k < K) {
          r += bs[k] * sh[3 * k];
          g += bs[k] * sh[3 * k + 1];
          bl += bs[k] * sh[3 * k + 2];
        }
      }
      col = make_float3(fmaxf(r + 0.5f, 0.f), fmaxf(g + 0.5f, 0.f), fmaxf(bl + 0.5f, 0.f));
      vis = shok && usable_color(col);
    }
  }
  if (i >= P) return;
  if (depth_index) depth_index[i] = i;  // the depth sort's values (rather than a torch.arange: a launch and pass fewer)
  if (!vis) {
    radii[i] = 0;
    tiles_touched[i] = 0;
    depth_keys[i] = 0xFFFFFFFFu;
    if (rank) rank[i] = -1;  // (here, coalesced, rather than scattered by the compaction)
    return;
  }
  radii[i] = rad;
  float4* sp = reinterpret_cast<float4*>(splats + i);  // (three 16-byte stores)
  sp[0] = make_float4(m.x, m.y, __int_as_float(rad), 0.f);
  sp[1] = co;
  sp[2] = make_float4(col.x, col.y, col.z, 1.f / z);
  depth_keys[i] = __float_as_uint(z);
  tiles_touched[i] = for_each_tile(m, co, rad, cam.tiles_x, cam.tiles_y, [](int) {});
}

void launch_preprocess_fwd(int P, int deg, int M, bool sh_fast, const float* means3D, const float* scales,
                           const float* rotations, const float* opacities, const float* shs,
                           const float* shs_rest, const float* colors_precomp, const float* cov3D_precomp,
                           const Cam& cam, int* radii, Splat* splats, uint32_t* depth_keys, int* depth_index,
                           int* tiles_touched, int* rank, cudaStream_t stream) {
  if (P == 0) return;
  preprocess_fwd_kernel<<<(P + PRE_BLOCK - 1) / PRE_BLOCK, PRE_BLOCK, 0, stream>>>(
      P, deg, M, sh_fast, means3D, scales, rotations, opacities, shs, shs_rest, colors_precomp, cov3D_precomp, cam,
      radii, splats, depth_keys, depth_index, tiles_touched, rank);
}

// After the depth sort: counts in depth order, V (number of visible Gaussians: their keys come first).
__global__ void gather_counts_kernel(int P, const int* order, const uint32_t* sorted_keys, const int* tiles_touched,
                                     int* counts_sorted, int* meta) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= P) return;
  const bool v = sorted_keys[i] != 0xFFFFFFFFu;
  counts_sorted[i] = v ? tiles_touched[order[i]] : 0;  // (a culled Gaussian touches no tile: not read)
  if (i == 0 && !v) meta[0] = 0;
  if (v && (i == P - 1 || sorted_keys[i + 1] == 0xFFFFFFFFu)) meta[0] = i + 1;
}

void launch_gather_counts(int P, const int* order, const uint32_t* sorted_keys, const int* tiles_touched,
                          int* counts_sorted, int* meta, cudaStream_t stream) {
  if (P == 0) return;
  gather_counts_kernel<<<(P + 255) / 256, 256, 0, stream>>>(P, order, sorted_keys, tiles_touched, counts_sorted,
                                                            meta);
}

__global__ void copy_total_kernel(int P, const int* offsets, int* meta) { meta[1] = offsets[P - 1]; }

void launch_copy_total(int P, const int* offsets, int* meta, cudaStream_t stream) {
  copy_total_kernel<<<1, 1, 0, stream>>>(P, offsets, meta);
}

// Visible Gaussians' render data in depth order (rank i), and their rank[g] (the culled ones' -1: preprocess).
__global__ void compact_kernel(int P, int V, const int* V_dev, const int* order, const Splat* splats, float2* xy_c,
                               float4* conic_c, float4* rgbd_c, int* radius_c, int* rank) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= P) return;
  if (V_dev) V = *V_dev;
  if (i >= V) return;
  const int g = order[i];
  const float4* sp = reinterpret_cast<const float4*>(splats + g);
  const float4 a = sp[0];
  xy_c[i] = make_float2(a.x, a.y);
  radius_c[i] = __float_as_int(a.z);
  conic_c[i] = sp[1];
  rgbd_c[i] = sp[2];
  rank[g] = i;
}

void launch_compact(int P, int V, const int* V_dev, const int* order, const Splat* splats, float2* xy_c,
                    float4* conic_c, float4* rgbd_c, int* radius_c, int* rank, cudaStream_t stream) {
  if (P == 0) return;
  compact_kernel<<<(P + 255) / 256, 256, 0, stream>>>(P, V, V_dev, order, splats, xy_c, conic_c, rgbd_c, radius_c,
                                                      rank);
}

// Gaussian g's pairs, its tiles row by row, written by `lanes` threads (lane 0..lanes-1, each calling it with the
// same other arguments: one thread, or a whole warp that writes a row's tiles side by side, ~rows + tiles/32 steps
// instead of one a tile). Pairs past `cap` are dropped; a shortfall (the count pass ran the same TileSpan) is padded
// with the sentinel tile id, which the range pass ignores.
template <typename KeyT>
__device__ __forceinline__ void emit_gaussian(int g, float2 m, float4 co, int radius, int tiles_x, int tiles_y,
                                              KeyT* k, int* v, int cap, int lane, int lanes) {
  const TileSpan span(m, co, radius, tiles_x, tiles_y);
  int n = 0;  // (the same on every lane)
  for (int ty = span.ty0; ty < span.ty1 && n < cap; ty++) {
    int txa, txb;
    span.row(ty, tiles_x, txa, txb);
    const int c = max(0, txb - txa);
    for (int t = lane; t < c && n + t < cap; t += lanes) {
      k[n + t] = (KeyT)(ty * tiles_x + txa + t);
      v[n + t] = g;
    }
    n += c;
  }
  for (int t = n + lane; t < cap; t += lanes) {
    k[t] = (KeyT)(tiles_x * tiles_y);
    v[t] = g;
  }
}

// Rank i's pairs go to offsets[i-1] .. offsets[i], cut at the capacity in the capacity mode (the call flagged).
__device__ __forceinline__ int pair_start(int i, const int* offsets, const PairCapacity& pc, int& cap) {
  const int start = i == 0 ? 0 : offsets[i - 1];
  int end = offsets[i];
  if (pc.meta && end > pc.capacity) {
    end = pc.capacity;
    pc.meta[2] = 1;
  }
  cap = max(0, end - start);
  return start;
}

// For visible Gaussians in depth order (rank i), write (tile, rank) pairs at offsets[i-1] .. offsets[i], one thread
// a Gaussian of up to EMIT_BY_WARP pairs. With QUEUE, a larger one is queued in heavy[2..] (heavy[0] counts them)
// for emit_heavy_kernel's warps: one thread writing all the tiles of a Gaussian that covers much of the image was
// the kernel's critical path, and so was one warp writing the 32 such Gaussians of its lanes one after another (the
// nearest, largest Gaussians are neighbours in depth order; Nsight Compute on an H200 at 1M Gaussians: one SM busy
// for all of the kernel's 0.23 ms, the average one for 0.04, docs/BENCHMARKS.md seventeenth session).
constexpr int EMIT_BY_WARP = 32;
template <typename KeyT, bool QUEUE>
__global__ void emit_kernel(int V, const int* offsets, const int* radius_c, const float2* xy_c,
                            const float4* conic_c, int tiles_x, int tiles_y, KeyT* keys, int* vals,
                            const PairCapacity pc, int* heavy) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (pc.meta) V = pc.meta[0];
  int start = 0, cap = 0;
  if (i < V) start = pair_start(i, offsets, pc, cap);
  const bool queued = QUEUE && cap > EMIT_BY_WARP;
  if (cap > 0 && !queued)
    emit_gaussian(i, xy_c[i], conic_c[i], radius_c[i], tiles_x, tiles_y, keys + start, vals + start, cap, 0, 1);
  if constexpr (QUEUE) {  // (every lane of the warp is here: the grid is whole blocks of whole warps)
    const unsigned mask = __ballot_sync(0xffffffffu, queued);
    if (mask != 0) {  // one atomic a warp
      const int lane = threadIdx.x & 31, leader = __ffs(mask) - 1;
      int base = 0;
      if (lane == leader) base = atomicAdd(heavy, __popc(mask));
      base = __shfl_sync(0xffffffffu, base, leader);
      if (queued) heavy[2 + base + __popc(mask & ((1u << lane) - 1))] = i;
    }
  }
}

// The queued Gaussians, each written by one warp (lanes side by side along a row of tiles); the warps take the next
// one from heavy[1] until the queue is done, so the largest spread over the GPU instead of waiting in line.
template <typename KeyT>
__global__ void emit_heavy_kernel(const int* offsets, const int* radius_c, const float2* xy_c, const float4* conic_c,
                                  int tiles_x, int tiles_y, KeyT* keys, int* vals, const PairCapacity pc,
                                  int* heavy) {
  const int lane = threadIdx.x & 31;
  const int queued = heavy[0];
  for (;;) {
    int item = 0;
    if (lane == 0) item = atomicAdd(heavy + 1, 1);
    item = __shfl_sync(0xffffffffu, item, 0);
    if (item >= queued) return;
    const int g = heavy[2 + item];
    int cap;
    const int start = pair_start(g, offsets, pc, cap);
    emit_gaussian(g, xy_c[g], conic_c[g], radius_c[g], tiles_x, tiles_y, keys + start, vals + start, cap, lane, 32);
  }
}

// In the capacity mode, the entries past the pair count (meta[1]) get the sentinel tile id, so that they sort
// last and the range pass ignores them.
template <typename KeyT>
__global__ void fill_sentinel_kernel(const PairCapacity pc, KeyT sentinel, KeyT* keys, int* vals) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= pc.capacity || i < pc.meta[1]) return;
  keys[i] = sentinel;
  vals[i] = 0;
}

template <typename KeyT>
void launch_emit_t(int V, const int* offsets, const int* radius_c, const float2* xy_c, const float4* conic_c,
                   int tiles_x, int tiles_y, KeyT* keys, int* vals, const PairCapacity& pc, int* heavy,
                   cudaStream_t stream) {
  if (pc.meta) {
    fill_sentinel_kernel<KeyT><<<(pc.capacity + 255) / 256, 256, 0, stream>>>(pc, (KeyT)(tiles_x * tiles_y), keys,
                                                                               vals);
  }
  if (V == 0) return;
  if (heavy != nullptr) cudaMemsetAsync(heavy, 0, 2 * sizeof(int), stream);  // (the queue's length, the next to take)
  auto kernel = heavy != nullptr ? emit_kernel<KeyT, true> : emit_kernel<KeyT, false>;
  kernel<<<(V + 255) / 256, 256, 0, stream>>>(V, offsets, radius_c, xy_c, conic_c, tiles_x, tiles_y, keys, vals, pc,
                                              heavy);
  if (heavy == nullptr) return;
  // up to 8,192 warps (about as many as an H200 holds at once; for fewer Gaussians one a Gaussian), each taking
  // queued Gaussians until none is left
  emit_heavy_kernel<KeyT><<<std::min((V + 7) / 8, 1024), 256, 0, stream>>>(offsets, radius_c, xy_c, conic_c, tiles_x,
                                                                             tiles_y, keys, vals, pc, heavy);
}

void launch_emit(int V, const int* offsets, const int* radius_c, const float2* xy_c, const float4* conic_c,
                 int tiles_x, int tiles_y, uint16_t* keys, int* vals, const PairCapacity& pc, int* heavy,
                 cudaStream_t stream) {
  launch_emit_t(V, offsets, radius_c, xy_c, conic_c, tiles_x, tiles_y, keys, vals, pc, heavy, stream);
}

void launch_emit(int V, const int* offsets, const int* radius_c, const float2* xy_c, const float4* conic_c,
                 int tiles_x, int tiles_y, uint32_t* keys, int* vals, const PairCapacity& pc, int* heavy,
                 cudaStream_t stream) {
  launch_emit_t(V, offsets, radius_c, xy_c, conic_c, tiles_x, tiles_y, keys, vals, pc, heavy, stream);
}

template <typename KeyT>
__global__ void identify_ranges_kernel(int R, const KeyT* keys, int num_tiles, int2* ranges) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= R) return;
  const int k = (int)keys[i];
  if (k >= num_tiles) return;
  if (i == 0 || (int)keys[i - 1] != k) ranges[k].x = i;
  if (i == R - 1 || (int)keys[i + 1] != k) ranges[k].y = i + 1;
}

void launch_identify_ranges(int R, const uint16_t* keys, int num_tiles, int2* ranges, cudaStream_t stream) {
  if (R == 0) return;
  identify_ranges_kernel<uint16_t><<<(R + 255) / 256, 256, 0, stream>>>(R, keys, num_tiles, ranges);
}

void launch_identify_ranges(int R, const uint32_t* keys, int num_tiles, int2* ranges, cudaStream_t stream) {
  if (R == 0) return;
  identify_ranges_kernel<uint32_t><<<(R + 255) / 256, 256, 0, stream>>>(R, keys, num_tiles, ranges);
}

__global__ void mark_visible_kernel(int P, const float* means3D, const float* view, bool* visible) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= P) return;
  const float3 p = make_float3(means3D[3 * i], means3D[3 * i + 1], means3D[3 * i + 2]);
  visible[i] = view_point(view, p).z > NEAR_Z;
}

void launch_mark_visible(int P, const float* means3D, const float* view, bool* visible, cudaStream_t stream) {
  if (P == 0) return;
  mark_visible_kernel<<<(P + 255) / 256, 256, 0, stream>>>(P, means3D, view, visible);
}

}  // namespace dgr
