// Tile compositing: forward (colour, inverse depth, optional per-Gaussian stats) and backward.
#include <algorithm>

#include "common.cuh"
#include "kernels.h"

namespace dgr {

// Pixel of tile-local thread `t` in `tile` (16x16): each warp covers a compact 8x4 block, so that a small Gaussian
// touches few warps (the backward skips warps with no contribution).
struct Pixel {
  int x, y;
  float fx, fy;
  bool inside;
};
__device__ __forceinline__ Pixel tile_pixel(int tile, int t, int tiles_x, int W, int H) {
  const int warp = t >> 5, lane = t & 31;
  Pixel p;
  p.x = (tile % tiles_x) * TILE + (((warp & 1) << 3) | (lane & 7));
  p.y = (tile / tiles_x) * TILE + (((warp >> 1) << 2) | (lane >> 3));
  p.fx = (float)p.x;
  p.fy = (float)p.y;
  p.inside = p.x < W && p.y < H;
  return p;
}

// One front-to-back blending term: colour and inverse depth += w x the Gaussian's (rgbd); DEPTH false: colour only
// (d untouched: the backward's walk behind a chunk when the inverse depth has no gradient).
template <bool DEPTH = true>
__device__ __forceinline__ void add_weighted(float& c0, float& c1, float& c2, float& d, float4 cd, float w) {
  c0 += cd.x * w;
  c1 += cd.y * w;
  c2 += cd.z * w;
  if constexpr (DEPTH) d += cd.w * w;
}

// Warp culling (DGR_FWD_CULL / DGR_BWD_CULL): the 8x4 pixel blocks of `tile` (warp w's block in tile_pixel's
// layout is bit w) that a Gaussian's alpha ellipse may reach (AlphaEllipse::may_reach, conservative: a block whose bit
// is clear has no pixel that passes the alpha test).
__device__ __forceinline__ unsigned warp_blocks_reached(float2 m, float4 co, int tile, int tiles_x) {
  const AlphaEllipse el(co);
  const float tx = (float)((tile % tiles_x) * TILE), ty = (float)((tile / tiles_x) * TILE);
  unsigned bits = 0u;
#pragma unroll
  for (int w = 0; w < BLOCK / 32; w++) {
    const float x0 = tx + (float)((w & 1) << 3), y0 = ty + (float)((w >> 1) << 2);
    if (el.may_reach(m, x0, y0, x0 + 7.f, y0 + 3.f)) bits |= 1u << w;
  }
  return bits;
}

// The culled walk of a block-staged batch: visit(j) for the slots j < n, in order, whose reached blocks (`blocks`, one
// byte a slot) include this thread's warp's, while this thread is not `done`. Every warp of the block calls it.
template <typename F>
__device__ __forceinline__ void walk_reached(const unsigned char* blocks, int n, int t, const bool& done, F&& visit) {
  const unsigned mine = 1u << (t >> 5);
  for (int j0 = 0; j0 < n; j0 += 32) {
    const int j = j0 + (t & 31);
    unsigned todo = __ballot_sync(0xffffffffu, j < n && (blocks[j] & mine));
    for (; todo != 0 && !done; todo &= todo - 1) visit(j0 + __ffs(todo) - 1);
  }
}

// A pixel's outputs once its walk is done: colour over the background, inverse depth, the state the backward reads
// (final T, last contributor), and with stats the Gaussian of the largest weight: its area_max vote and its index
// (max_id, the per-pixel stat max_contributor; -1 where none contributes).
template <int STATS>
__device__ __forceinline__ void write_pixel(int pix, int HW, float T, int last, float C0, float C1, float C2, float D,
                                            int best_g, const float* bg, float* out_color, float* out_invdepth,
                                            float* final_T, int* n_contrib, float* area_max, int* max_id) {
  final_T[pix] = T;
  n_contrib[pix] = last;
  out_color[pix] = C0 + T * bg[0];
  out_color[HW + pix] = C1 + T * bg[1];
  out_color[2 * HW + pix] = C2 + T * bg[2];
  out_invdepth[pix] = D;
  if (STATS != STATS_NONE) {
    max_id[pix] = best_g;
    if (best_g >= 0) atomicAdd(area_max + best_g, 1.f);
  }
}

// STATS: STATS_NONE, STATS_AREA_MAX (only area_max: one atomic per pixel, what training densification
// reads) or STATS_ALL (also accum_weights and area_proj: two atomics per pixel-Gaussian contribution).
// The block stages 256 of the tile's Gaussians at a time and stops when all its pixels are done (staging per
// warp, as the backward does, made the render phase slower when measured: docs/BENCHMARKS.md, 2026-11-30).
//
// CHUNKED (DGR_FWD_CHUNKS > 1: launch_render_fwd with chunks > 1): a tile's list is cut into `chunks` depth
// chunks, each blended by a block of its own, so that a scene of few tiles with long lists (lego: 625 tiles, the
// forward at 18% occupancy) is not bound by its longest tile's walk. Alpha compositing composes across chunks once
// each chunk knows the transmittance in front of it: render_fwd_prefix_kernel first writes each chunk's own
// transmittance product (prod[chunk][pixel], all chunks but the last: alpha only, 0 where it alone reaches T_MIN),
// this kernel starts chunk c from the product of the chunks in front and writes its partial sums
// (part[chunk][8][pixel]), and render_fwd_merge_kernel adds them up to the chunk where the pixel stopped. A pixel's
// stop (the first Gaussian that would take T below T_MIN) is found by the chunk it falls in, with the T in front of
// it (a product of the chunks' products: equal to the walk's to float rounding, so a stop within rounding of T_MIN
// may fall one Gaussian apart); the per-Gaussian stats use those weights, so they equal the one-block walk's to
// float rounding.
constexpr int FWD_PARTS = 8;  // partial sums of a chunk: colour (3), inverse depth, T after it (-1: not reached),
                              // last contributor (negated - 1: the pixel stopped in it), best weight, best Gaussian

// Entries [lo, hi) of a list of `len` that chunk `c` of `chunks` covers.
__device__ __forceinline__ void chunk_bounds(int len, int chunks, int c, int& lo, int& hi) {
  const long long step = ((long long)len + chunks - 1) / chunks;
  lo = (int)min((long long)len, c * step);
  hi = (int)min((long long)len, lo + step);
}

// CULL (DGR_FWD_CULL=on): the thread that stages a Gaussian also marks the 8x4 pixel blocks its alpha ellipse may
// reach, and each warp walks only the staged Gaussians marked for its block: the same Gaussians blend at each pixel,
// in the same order (the same image, bit for bit).
template <int STATS, bool CHUNKED, bool CULL>
__global__ void __launch_bounds__(BLOCK) render_fwd_kernel(
    int tiles_x, int W, int H, const int2* __restrict__ ranges, const int* __restrict__ point_list,
    const float2* __restrict__ xy, const float4* __restrict__ conic_op, const float4* __restrict__ rgbd,
    const float* __restrict__ bg, float* __restrict__ out_color, float* __restrict__ out_invdepth,
    float* __restrict__ final_T, int* __restrict__ n_contrib, const int* __restrict__ order,
    float* __restrict__ accum_w, float* __restrict__ area_proj, float* __restrict__ area_max,
    int* __restrict__ max_id, const int* __restrict__ tile_order, int chunks, const float* __restrict__ prod,
    float* __restrict__ part) {
  __shared__ int s_id[BLOCK];
  __shared__ float2 s_xy[BLOCK];
  __shared__ float4 s_co[BLOCK];
  __shared__ float4 s_cd[BLOCK];
  __shared__ unsigned char s_reached[CULL ? BLOCK : 1];

  const int slot = CHUNKED ? blockIdx.x / chunks : blockIdx.x;  // (a tile's chunks are adjacent blocks)
  const int tile = tile_order ? tile_order[slot] : slot;
  const int t = threadIdx.x;
  const Pixel p = tile_pixel(tile, t, tiles_x, W, H);
  const int px = p.x, py = p.y;
  const bool inside = p.inside;
  const float fpx = p.fx, fpy = p.fy;
  const int pix = py * W + px;
  const int HW = H * W;

  const int2 range = ranges[tile];
  int lo = 0, hi = range.y - range.x;  // this block's entries of the tile's list
  const int chunk = CHUNKED ? blockIdx.x % chunks : 0;
  float T = 1.f;
  if constexpr (CHUNKED) {
    chunk_bounds(range.y - range.x, chunks, chunk, lo, hi);
    if (inside)
      for (int c = 0; c < chunk; c++) T *= prod[(size_t)c * HW + pix];  // (the chunks in front)
  }

  bool done = !inside || T < T_MIN;  // (chunked: the pixel stopped in a chunk in front)
  const bool reached = !done;
  bool stopped = false;
  float C0 = 0.f, C1 = 0.f, C2 = 0.f, D = 0.f;
  int contributor = lo, last = 0;
  float best_w = 0.f;
  int best_g = -1;

  auto stage = [&](int slot, int idx) {
    const int g = point_list[idx];  // rank of the Gaussian (depth order)
    if (STATS != STATS_NONE) s_id[slot] = order[g];  // its index, for the per-Gaussian stats
    const float2 m = xy[g];
    const float4 co = conic_op[g];
    s_xy[slot] = m;
    s_co[slot] = co;
    s_cd[slot] = rgbd[g];
    if constexpr (CULL) s_reached[slot] = (unsigned char)warp_blocks_reached(m, co, tile, tiles_x);
  };
  auto blend = [&](int k) {  // the Gaussian staged in slot k, in front-to-back order
    contributor++;
    const float4 co = s_co[k];
    const AlphaEval e = eval_alpha(s_xy[k], co, fpx, fpy);
    if (!e.ok) return;
    const float test_T = T * (1.f - e.alpha);
    if (test_T < T_MIN) {
      done = stopped = true;
      return;
    }
    const float w = e.alpha * T;
    add_weighted(C0, C1, C2, D, s_cd[k], w);
    T = test_T;
    last = contributor;
    if (STATS == STATS_ALL) {
      atomicAdd(accum_w + s_id[k], w);
      atomicAdd(area_proj + s_id[k], 1.f);
    }
    if (STATS != STATS_NONE && w > best_w) {
      best_w = w;
      best_g = s_id[k];
    }
  };

  for (int start = lo; start < hi; start += BLOCK) {
    if (__syncthreads_count(done) == BLOCK) break;
    const int idx = start + t;
    if (idx < hi) stage(t, range.x + idx);
    __syncthreads();
    const int n = min(BLOCK, hi - start);
    if constexpr (CULL) {
      walk_reached(s_reached, n, t, done, [&](int j) {
        contributor = start + j;  // (blend counts it: its list position, as the full walk's count reaches it)
        blend(j);
      });
    } else {
      for (int j = 0; j < n && !done; j++) blend(j);
    }
  }
  if (!inside) return;
  if constexpr (CHUNKED) {
    float* q = part + (size_t)chunk * FWD_PARTS * HW + pix;
    q[0] = C0;
    q[HW] = C1;
    q[2 * HW] = C2;
    q[3 * HW] = D;
    q[4 * HW] = reached ? T : -1.f;
    q[5 * HW] = __int_as_float(stopped ? -(last + 1) : last);
    q[6 * HW] = best_w;
    q[7 * HW] = __int_as_float(best_g);
  } else {
    write_pixel<STATS>(pix, HW, T, last, C0, C1, C2, D, best_g, bg, out_color, out_invdepth, final_T, n_contrib,
                       area_max, max_id);
  }
}

// Pass 1 of the chunked forward: each chunk's own transmittance product at each pixel (alpha only), 0 where the
// chunk alone takes it below T_MIN (the pixel then stops in this chunk or in front of it); not the last chunk's, which
// no chunk is behind. Blocks: (chunks - 1) a tile.
template <bool CULL>
__global__ void __launch_bounds__(BLOCK) render_fwd_prefix_kernel(
    int tiles_x, int W, int H, const int2* __restrict__ ranges, const int* __restrict__ point_list,
    const float2* __restrict__ xy, const float4* __restrict__ conic_op, const int* __restrict__ tile_order,
    int chunks, float* __restrict__ prod) {
  __shared__ float2 s_xy[BLOCK];
  __shared__ float4 s_co[BLOCK];
  __shared__ unsigned char s_reached[CULL ? BLOCK : 1];

  const int slot = blockIdx.x / (chunks - 1), chunk = blockIdx.x % (chunks - 1);
  const int tile = tile_order ? tile_order[slot] : slot;
  const int t = threadIdx.x;
  const Pixel p = tile_pixel(tile, t, tiles_x, W, H);
  const int2 range = ranges[tile];
  int lo, hi;
  chunk_bounds(range.y - range.x, chunks, chunk, lo, hi);

  bool done = !p.inside;
  float P = 1.f;
  for (int start = lo; start < hi; start += BLOCK) {
    if (__syncthreads_count(done) == BLOCK) break;
    const int idx = start + t;
    if (idx < hi) {
      const int g = point_list[range.x + idx];
      const float2 m = xy[g];
      const float4 co = conic_op[g];
      s_xy[t] = m;
      s_co[t] = co;
      if constexpr (CULL) s_reached[t] = (unsigned char)warp_blocks_reached(m, co, tile, tiles_x);
    }
    __syncthreads();
    const int n = min(BLOCK, hi - start);
    auto absorb = [&](int j) {  // the Gaussian in slot j: the chunk's transmittance product so far
      const AlphaEval e = eval_alpha(s_xy[j], s_co[j], p.fx, p.fy);
      if (!e.ok) return;
      const float test = P * (1.f - e.alpha);
      if (test < T_MIN) {
        P = 0.f;
        done = true;
      } else {
        P = test;
      }
    };
    if constexpr (CULL) {
      walk_reached(s_reached, n, t, done, absorb);
    } else {
      for (int j = 0; j < n && !done; j++) absorb(j);
    }
  }
  if (p.inside) prod[(size_t)chunk * H * W + p.y * W + p.x] = P;
}

// Pass 3 of the chunked forward: a pixel's chunks added up front to back, to the one it stopped in.
template <int STATS>
__global__ void render_fwd_merge_kernel(int HW, int chunks, const float* __restrict__ part,
                                        const float* __restrict__ bg, float* __restrict__ out_color,
                                        float* __restrict__ out_invdepth, float* __restrict__ final_T,
                                        int* __restrict__ n_contrib, float* __restrict__ area_max,
                                        int* __restrict__ max_id) {
  const int pix = blockIdx.x * blockDim.x + threadIdx.x;
  if (pix >= HW) return;
  float C0 = 0.f, C1 = 0.f, C2 = 0.f, D = 0.f, T = 1.f, best_w = 0.f;
  int last = 0, best_g = -1;
  for (int c = 0; c < chunks; c++) {
    const float* q = part + (size_t)c * FWD_PARTS * HW + pix;
    const float Tc = q[4 * HW];
    if (Tc < 0.f) break;  // (the pixel stopped in front of this chunk)
    C0 += q[0];
    C1 += q[HW];
    C2 += q[2 * HW];
    D += q[3 * HW];
    T = Tc;
    const int l = __float_as_int(q[5 * HW]);
    last = max(last, l < 0 ? -l - 1 : l);
    if (STATS != STATS_NONE && q[6 * HW] > best_w) {
      best_w = q[6 * HW];
      best_g = __float_as_int(q[7 * HW]);
    }
    if (l < 0) break;  // it stopped in this chunk
  }
  write_pixel<STATS>(pix, HW, T, last, C0, C1, C2, D, best_g, bg, out_color, out_invdepth, final_T, n_contrib,
                     area_max, max_id);
}

// The forward kernel of a stats mode, one-block (CHUNKED false) or chunked, culled or not.
template <bool CHUNKED, bool CULL>
auto fwd_kernel(int stats) {
  return stats == STATS_ALL        ? render_fwd_kernel<STATS_ALL, CHUNKED, CULL>
         : stats == STATS_AREA_MAX ? render_fwd_kernel<STATS_AREA_MAX, CHUNKED, CULL>
                                   : render_fwd_kernel<STATS_NONE, CHUNKED, CULL>;
}

void launch_render_fwd(int stats, int num_tiles, int tiles_x, int W, int H, const int2* ranges,
                       const int* point_list, const float2* xy, const float4* conic_op, const float4* rgbd,
                       const float* bg, float* out_color, float* out_invdepth, float* final_T, int* n_contrib,
                       const int* order, float* accum_w, float* area_proj, float* area_max, int* max_id,
                       const int* tile_order, int chunks, float* scratch, bool cull, cudaStream_t stream) {
  if (num_tiles == 0) return;
  chunks = std::max(1, chunks);
  const bool chunked = chunks > 1;
  const int HW = W * H;
  float* prod = chunked ? scratch : nullptr;                              // [chunks - 1][HW]
  float* part = chunked ? scratch + (size_t)(chunks - 1) * HW : nullptr;  // [chunks][FWD_PARTS][HW]
  if (chunked) {
    auto prefix = cull ? render_fwd_prefix_kernel<true> : render_fwd_prefix_kernel<false>;
    prefix<<<num_tiles * (chunks - 1), BLOCK, 0, stream>>>(tiles_x, W, H, ranges, point_list, xy, conic_op,
                                                           tile_order, chunks, prod);
  }
  auto kernel = chunked ? (cull ? fwd_kernel<true, true>(stats) : fwd_kernel<true, false>(stats))
                        : (cull ? fwd_kernel<false, true>(stats) : fwd_kernel<false, false>(stats));
  kernel<<<num_tiles * chunks, BLOCK, 0, stream>>>(tiles_x, W, H, ranges, point_list, xy, conic_op, rgbd, bg,
                                                   out_color, out_invdepth, final_T, n_contrib, order, accum_w,
                                                   area_proj, area_max, max_id, tile_order, chunks, prod, part);
  if (!chunked) return;
  auto merge = stats == STATS_NONE ? render_fwd_merge_kernel<STATS_NONE> : render_fwd_merge_kernel<STATS_ALL>;
  merge<<<(HW + 255) / 256, 256, 0, stream>>>(HW, chunks, part, bg, out_color, out_invdepth, final_T, n_contrib,
                                              area_max, max_id);
}

// Blocks of `threads` that one SM holds at once, at the kernel's registers and shared memory (0: unknown).
template <typename Kernel>
int resident_blocks(Kernel kernel, int threads) {
  int blocks = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, 0) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return blocks;
}

int render_fwd_resident_blocks() {  // (the one-block walk's)
  return resident_blocks(render_fwd_kernel<STATS_AREA_MAX, false, false>, BLOCK);
}

size_t render_fwd_scratch_floats(int chunks, int W, int H) {
  return chunks <= 1 ? 0 : ((size_t)chunks - 1 + (size_t)chunks * FWD_PARTS) * W * H;
}

// Sum 10 per-lane values over the warp with a reduce-scatter in 12 shuffles (50 by plain butterflies) and add each
// total to dst[0..9] with one atomic instruction spread over 10 lanes. Each exchange halves what a lane holds,
// 10 -> 5 -> 3 or 2 -> 2 or 1 -> 1, then the last pair adds up. Lane bits a (16), b (8), c (4), d (2) choose the half
// kept: value 5a + (b and c clear: d; else b ? 3 + c : 2) ends summed in lane pairs (l, l ^ 1), one pair for values
// 0, 1, 5 and 6, two (d clear and set) for the others; one even lane of each value writes it. Every lane's choice is
// a select, so the sum compiles to straight-line code; padding the 10 to 16 for a power-of-two split (16 shuffles)
// compiled its first exchange to a loop with a divergent branch per value and cost lego's 7,000 steps 1.27x the time
// (docs/BENCHMARKS.md, twentieth session).
__device__ __forceinline__ void warp_sum10_atomic(const float v[GRAD_STRIDE], int lane, float* dst) {
  constexpr unsigned FULL = 0xffffffffu;
  const bool a = lane & 16, b = lane & 8, c = lane & 4, d = lane & 2;
  float w[5];  // 16 apart: values 0-4 (a clear) or 5-9
#pragma unroll
  for (int k = 0; k < 5; k++) w[k] = (a ? v[k + 5] : v[k]) + __shfl_xor_sync(FULL, a ? v[k] : v[k + 5], 16);
  // 8 apart: w0-w2 (b clear: z0-z2) or w3-w4 (z0-z1)
  const float z0 = (b ? w[3] : w[0]) + __shfl_xor_sync(FULL, b ? w[0] : w[3], 8);
  const float z1 = (b ? w[4] : w[1]) + __shfl_xor_sync(FULL, b ? w[1] : w[4], 8);
  const float z2 = w[2] + __shfl_xor_sync(FULL, w[2], 8);
  // 4 apart: of three, z0-z1 (c clear: y0-y1) or z2; of two, z0 (c clear) or z1
  const float y0 = (c ? (b ? z1 : z2) : z0) + __shfl_xor_sync(FULL, c ? z0 : (b ? z1 : z2), 4);
  const float y1 = z1 + __shfl_xor_sync(FULL, z1, 4);
  // 2 apart: the lanes that kept two values (b, c clear) keep y0 (d clear) or y1; the others add up their one
  const bool two = !b && !c;
  float t = (two && d ? y1 : y0) + __shfl_xor_sync(FULL, two && !d ? y1 : y0, 2);
  t += __shfl_xor_sync(FULL, t, 1);
  const int slot = 5 * a + (two ? (int)d : b ? 3 + (int)c : 2);
  if ((lane & 1) == 0 && (two || !d)) atomicAdd(dst + slot, t);
}

// Warps per block of the backward: each warp stages and walks its own pixels' Gaussians back to front, 32 at
// a time with no block barrier (a warp whose pixels blend few Gaussians neither waits for the others nor
// holds them up), and small blocks free their resources as soon as their warps are done.
constexpr int BWD_WARPS = 2;
constexpr int BWD_SPLIT = BLOCK / 32 / BWD_WARPS;  // blocks per tile and chunk

// `chunks` > 1 splits each tile's list into that many depth chunks, each walked by its own blocks: a scene of few
// tiles with long, unequal lists (lego: 625 tiles, its SMs idle a third to half of the kernel, docs/BENCHMARKS.md)
// gets that many times the warps. A chunk starts from the state behind it, which its warps first rebuild by
// walking the entries behind the chunk front to back (alpha only: no gradients, no atomics): the transmittance
// product P of those entries and their colour; the transmittance after the chunk is then final_T / P.

// CULL (DGR_BWD_CULL=on): the lane that stages a Gaussian also tests its alpha ellipse's box against the warp's 8x4
// pixels (AlphaEllipse::may_reach), and the warp walks only the staged Gaussians that may reach them, instead of
// evaluating every one at all 32 pixels to find none passes. A skipped Gaussian is one no pixel of the warp blends,
// so the same Gaussians blend in the same order: the same gradients up to the atomics' float order. (CULL holds to 16
// blocks an SM, the full walk's occupancy: 64 registers, none spilled, where it would take 70 and 14 blocks.)
// DEPTH false (no gradient of the inverse depth: not in the loss): no depth terms at all (gD, v[9] = 0, the depth
// term of dL/dalpha, accD and bD), fewer instructions per (Gaussian, pixel) in an issue-bound kernel.
template <bool CULL, bool DEPTH>
__global__ void __launch_bounds__(BWD_WARPS * 32, CULL ? 16 : 0) render_bwd_kernel(
    int tiles_x, int W, int H, const int2* __restrict__ ranges, const int* __restrict__ point_list,
    const float2* __restrict__ xy, const float4* __restrict__ conic_op, const float4* __restrict__ rgbd,
    const float* __restrict__ bg, const float* __restrict__ final_T, const int* __restrict__ n_contrib,
    const float* __restrict__ dL_dcolor, int cs0, int cs1, int cs2, const float* __restrict__ dL_dinvdepth, int ds1,
    int ds2, float* __restrict__ grad, int chunks, const int* __restrict__ tile_order) {
  __shared__ int s_id[BWD_WARPS * 32];
  __shared__ float2 s_xy[BWD_WARPS * 32];
  __shared__ float4 s_co[BWD_WARPS * 32];
  __shared__ float4 s_cd[BWD_WARPS * 32];

  const int per_tile = BWD_SPLIT * chunks;  // (a tile's blocks chunk by chunk: the front chunks, which walk the
  const int slot = blockIdx.x / per_tile;    //  longest way behind them, start first)
  const int tile = tile_order ? tile_order[slot] : slot;
  const int chunk = (blockIdx.x % per_tile) / BWD_SPLIT;
  const int t = threadIdx.x;
  const int lane = t & 31;
  const Pixel p = tile_pixel(tile, (blockIdx.x % BWD_SPLIT) * BWD_WARPS * 32 + t, tiles_x, W, H);
  const int px = p.x, py = p.y;
  const bool inside = p.inside;
  const float fpx = p.fx, fpy = p.fy;
  const int2 range = ranges[tile];

  float T = 1.f;
  int last = 0;
  float g0 = 0.f, g1 = 0.f, g2 = 0.f, gD = 0.f;
  if (inside) {
    const int pix = py * W + px;
    T = final_T[pix];
    last = n_contrib[pix];
    // upstream gradients may be strided (e.g. expanded by a sum): index them by their strides
    const int64_t cp = (int64_t)py * cs1 + (int64_t)px * cs2;
    g0 = dL_dcolor[cp];
    g1 = dL_dcolor[cs0 + cp];
    g2 = dL_dcolor[2 * (int64_t)cs0 + cp];
    if constexpr (DEPTH) gD = dL_dinvdepth[(int64_t)py * ds1 + (int64_t)px * ds2];
  }
  const int warp_last = __reduce_max_sync(0xffffffffu, last);

  // accumulated colour / inverse depth of everything behind the current Gaussian, normalised by the
  // transmittance just after it (starts with the background, which weighs T_final)
  float acc0 = bg[0], acc1 = bg[1], acc2 = bg[2], accD = 0.f;

  // Gaussian j of the tile's list, staged in slot k: its gradient contributions from this warp's pixels
  auto blend_back = [&](int k, int j) {
    const float4 co = s_co[k];
    const float2 m = s_xy[k];
    bool valid = j < last;
    AlphaEval e;
    if (valid) {
      e = eval_alpha(m, co, fpx, fpy);
      valid = e.ok;
    }
    if (!__any_sync(0xffffffffu, valid)) return;
    float v[GRAD_STRIDE];
#pragma unroll
    for (int q = 0; q < GRAD_STRIDE; q++) v[q] = 0.f;
    if (valid) {
      const float4 cd = s_cd[k];
      T = T / (1.f - e.alpha);  // transmittance in front of this Gaussian
      const float w = e.alpha * T;
      v[6] = w * g0;
      v[7] = w * g1;
      v[8] = w * g2;
      if constexpr (DEPTH) v[9] = w * gD;  // (else 0: slot 9 of the zeroed grad stays 0)
      const float rgb_terms = (cd.x - acc0) * g0 + (cd.y - acc1) * g1 + (cd.z - acc2) * g2;  // (of dL/dalpha / T)
      const float dL_dalpha = T * (DEPTH ? rgb_terms + (cd.w - accD) * gD : rgb_terms);
      acc0 = e.alpha * cd.x + (1.f - e.alpha) * acc0;
      acc1 = e.alpha * cd.y + (1.f - e.alpha) * acc1;
      acc2 = e.alpha * cd.z + (1.f - e.alpha) * acc2;
      if constexpr (DEPTH) accD = e.alpha * cd.w + (1.f - e.alpha) * accD;
      if (e.raw <= ALPHA_MAX) {  // alpha not clamped: it depends on opacity and power
        v[5] = e.G * dL_dalpha;
        const float dL_dpower = e.raw * dL_dalpha;
        v[0] = dL_dpower * (-co.x * e.dx - co.y * e.dy);
        v[1] = dL_dpower * (-co.y * e.dx - co.z * e.dy);
        v[2] = -0.5f * e.dx * e.dx * dL_dpower;
        v[3] = -e.dx * e.dy * dL_dpower;
        v[4] = -0.5f * e.dy * e.dy * dL_dpower;
      }
    }
    warp_sum10_atomic(v, lane, grad + (size_t)s_id[k] * GRAD_STRIDE);
  };
  // the warp's pixel rect (its lane 0 holds the top-left pixel: tile_pixel's 8x4 layout)
  const float wx0 = CULL ? __shfl_sync(0xffffffffu, fpx, 0) : 0.f, wy0 = CULL ? __shfl_sync(0xffffffffu, fpy, 0) : 0.f;
  // Stage entry li of the tile's list in slot `slot`; true where it may reach the warp's pixels (always without CULL)
  auto stage = [&](int slot, int li) {
    const int g = point_list[range.x + li];
    const float2 m = xy[g];
    const float4 co = conic_op[g];
    s_id[slot] = g;
    s_xy[slot] = m;
    s_co[slot] = co;
    s_cd[slot] = rgbd[g];
    return !CULL || AlphaEllipse(co).may_reach(m, wx0, wy0, wx0 + 7.f, wy0 + 3.f);
  };

  // this block's chunk: entries [lo, hi) of the tile's list (32-aligned bounds)
  const int len = range.y - range.x;
  const int step = ((len + chunks - 1) / chunks + 31) & ~31;
  const int lo = min(len, chunk * step), hi = min(len, lo + step);
  if (lo >= warp_last) return;  // (warp-uniform) none of this warp's pixels blends an entry of the chunk

  const int base = t & ~31;  // this warp's staging slots
  if (hi < warp_last) {  // entries behind the chunk, front to back: their transmittance product and colour
    float P = 1.f, b0 = 0.f, b1 = 0.f, b2 = 0.f, bD = 0.f;
    auto blend_front = [&](int k) {
      const AlphaEval e = eval_alpha(s_xy[k], s_co[k], fpx, fpy);
      if (!e.ok) return;
      add_weighted<DEPTH>(b0, b1, b2, bD, s_cd[k], e.alpha * P);
      P *= 1.f - e.alpha;
    };
    for (int start = hi; start < warp_last; start += 32) {
      const int end = min(warp_last, start + 32);
      __syncwarp();
      const bool mine = start + lane < end && stage(base + lane, start + lane);
      if constexpr (CULL) {
        unsigned todo = __ballot_sync(0xffffffffu, mine);
        __syncwarp();
        for (; todo != 0; todo &= todo - 1) {  // front to back: the lowest bit first
          const int j = start + __ffs(todo) - 1;
          if (j >= last) break;
          blend_front(base + j - start);
        }
      } else {
        __syncwarp();
        for (int j = start; j < end && j < last; j++) blend_front(base + j - start);
      }
    }
    if (hi < last) {  // this pixel blends entries behind the chunk: start from the state at its back
      T = T / P;
      acc0 = b0 + P * acc0;
      acc1 = b1 + P * acc1;
      acc2 = b2 + P * acc2;
      if constexpr (DEPTH) accD = bD + P * accD;
    }
  }
  for (int end = min(hi, warp_last); end > lo; end -= 32) {
    const int start = max(lo, end - 32);
    __syncwarp();
    const bool mine = start + lane < end && stage(base + lane, start + lane);
    if constexpr (CULL) {
      unsigned todo = __ballot_sync(0xffffffffu, mine);
      __syncwarp();
      while (todo != 0) {  // back to front: the highest bit first
        const int b = 31 - __clz(todo);
        todo ^= 1u << b;
        blend_back(base + b, start + b);
      }
    } else {
      __syncwarp();
      for (int j = end - 1; j >= start; j--) blend_back(base + j - start, j);
    }
  }
}

void launch_render_bwd(int num_tiles, int tiles_x, int W, int H, const int2* ranges, const int* point_list,
                       const float2* xy, const float4* conic_op, const float4* rgbd, const float* bg,
                       const float* final_T, const int* n_contrib, const float* dL_dcolor, int cs0, int cs1, int cs2,
                       const float* dL_dinvdepth, int ds1, int ds2, float* grad, int chunks, const int* tile_order,
                       bool cull, bool depth, cudaStream_t stream) {
  if (num_tiles == 0) return;
  chunks = std::max(1, chunks);
  auto kernel = cull ? (depth ? render_bwd_kernel<true, true> : render_bwd_kernel<true, false>)
                     : (depth ? render_bwd_kernel<false, true> : render_bwd_kernel<false, false>);
  kernel<<<num_tiles * BWD_SPLIT * chunks, BWD_WARPS * 32, 0, stream>>>(
      tiles_x, W, H, ranges, point_list, xy, conic_op, rgbd, bg, final_T, n_contrib, dL_dcolor, cs0, cs1, cs2,
      dL_dinvdepth, ds1, ds2, grad, chunks, tile_order);
}

// Per SM (0: unknown), of the full walk with the depth terms (as before DEPTH: bwd_chunks asks once a process, so one
// instantiation's count, the same chunks with or without a depth gradient).
int render_bwd_resident_warps() {
  return resident_blocks(render_bwd_kernel<false, true>, BWD_WARPS * 32) * BWD_WARPS;
}

// One warp per tile: work[t] = the tile's number of (tile, Gaussian) pairs (n_contrib == nullptr) or the
// largest number of Gaussians one of its pixels blends (what bounds the backward's loop); ids[t] = t.
__global__ void tile_work_kernel(int num_tiles, int tiles_x, int W, int H, const int2* __restrict__ ranges,
                                 const int* __restrict__ n_contrib, int* __restrict__ work, int* __restrict__ ids) {
  const int tile = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
  if (tile >= num_tiles) return;
  int w;
  if (n_contrib == nullptr) {
    const int2 r = ranges[tile];
    w = r.y - r.x;
  } else {
    const int x0 = (tile % tiles_x) * TILE, y0 = (tile / tiles_x) * TILE;
    int m = 0;
    for (int k = lane; k < BLOCK; k += 32) {
      const int px = x0 + (k % TILE), py = y0 + k / TILE;
      if (px < W && py < H) m = max(m, n_contrib[py * W + px]);
    }
    w = __reduce_max_sync(0xffffffffu, m);
  }
  if (lane == 0) {
    work[tile] = w;
    ids[tile] = tile;
  }
}

void launch_tile_work(int num_tiles, int tiles_x, int W, int H, const int2* ranges, const int* n_contrib, int* work,
                      int* ids, cudaStream_t stream) {
  if (num_tiles == 0) return;
  tile_work_kernel<<<(num_tiles * 32 + 255) / 256, 256, 0, stream>>>(num_tiles, tiles_x, W, H, ranges, n_contrib,
                                                                     work, ids);
}

}  // namespace dgr
