// Launchers of the rasterizer kernels (raw pointers, one CUDA stream); api.cu strings them together.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

#include "common.cuh"

namespace dgr {

// One visible Gaussian's render data as the preprocessing writes it (48 bytes, three 16-byte words): the compaction
// gathers it in depth order from one place (two 32-byte sectors instead of one for each of four arrays).
struct Splat {
  float2 xy;
  int radius, unused;
  float4 conic_op;
  float4 rgbd;  // colour and inverse depth
};
static_assert(sizeof(Splat) == 48 && alignof(Splat) == 16, "Splat: three 16-byte words");

// Per-Gaussian projection, colour and tile count. Culled Gaussians get radius 0, tile count 0, the largest depth key
// and rank -1 (rank unless nullptr; the compaction writes the visible ones'); `splats` is written for visible
// Gaussians only. sh_fast: M == 16 and either shs 16-byte aligned or the SH split into shs (DC [P, 3]) and shs_rest
// ([P, 45]) (coalesced shared-memory staging of the SH rows); shs_rest is nullptr unless split, which needs
// sh_fast. depth_index (unless nullptr) gets 0 .. P-1, the depth sort's values.
void launch_preprocess_fwd(int P, int deg, int M, bool sh_fast, const float* means3D, const float* scales,
                           const float* rotations, const float* opacities, const float* shs,
                           const float* shs_rest, const float* colors_precomp, const float* cov3D_precomp,
                           const Cam& cam, int* radii, Splat* splats, uint32_t* depth_keys, int* depth_index,
                           int* tiles_touched, int* rank, cudaStream_t stream);

// counts_sorted[i] = tiles_touched[order[i]] (0 past the visible ones, unread); meta[0] = number of visible
// Gaussians (they sort first).
void launch_gather_counts(int P, const int* order, const uint32_t* sorted_keys, const int* tiles_touched,
                          int* counts_sorted, int* meta, cudaStream_t stream);

// meta[1] = offsets[P - 1] (total number of (tile, Gaussian) pairs)
void launch_copy_total(int P, const int* offsets, int* meta, cudaStream_t stream);

// Render data of the V visible Gaussians in depth order (their rank), and rank[g] = its rank (the culled ones' -1
// is the preprocessing's). V_dev (the capacity mode) is V on the device, read instead of V.
void launch_compact(int P, int V, const int* V_dev, const int* order, const Splat* splats, float2* xy_c,
                    float4* conic_c, float4* rgbd_c, int* radius_c, int* rank, cudaStream_t stream);

// The capacity mode (no host-device sync in the forward): the pair buffers hold `capacity` entries and the
// kernels read V and the pair count from meta = [V, pairs, overflow] on the device; meta == nullptr: the exact
// mode, buffers sized by the counts the host read.
struct PairCapacity {
  int capacity;
  int* meta;
};

// For ranks i < V, write (tile, rank) pairs at offsets[i-1] .. offsets[i]. Tile keys are 16-bit when the
// grid (plus one sentinel id) fits, else 32-bit. In the capacity mode, V comes from meta[0], the entries from
// meta[1] to the capacity get the sentinel tile id, and pairs past the capacity are dropped with meta[2] = 1.
// heavy (V + 2 ints of scratch, or null: one thread a Gaussian): a Gaussian of many pairs is queued there and
// written by a whole warp of a second kernel (the same pairs, in the same places).
void launch_emit(int V, const int* offsets, const int* radius_c, const float2* xy_c, const float4* conic_c,
                 int tiles_x, int tiles_y, uint16_t* keys, int* vals, const PairCapacity& pc, int* heavy,
                 cudaStream_t stream);
void launch_emit(int V, const int* offsets, const int* radius_c, const float2* xy_c, const float4* conic_c,
                 int tiles_x, int tiles_y, uint32_t* keys, int* vals, const PairCapacity& pc, int* heavy,
                 cudaStream_t stream);

// ranges[t] = [first, last) of tile t in the tile-sorted keys (ranges zeroed by the caller).
void launch_identify_ranges(int R, const uint16_t* keys, int num_tiles, int2* ranges, cudaStream_t stream);
void launch_identify_ranges(int R, const uint32_t* keys, int num_tiles, int2* ranges, cudaStream_t stream);

void launch_mark_visible(int P, const float* means3D, const float* view, bool* visible, cudaStream_t stream);

// stats of the forward (rasterize_forward's stats_mode): per Gaussian, and per pixel max_id [H * W], the index of the
// Gaussian of the largest weight (computed with area_max)
enum StatsMode { STATS_NONE = 0, STATS_AREA_MAX = 1, STATS_ALL = 2 };
void launch_render_fwd(int stats, int num_tiles, int tiles_x, int W, int H, const int2* ranges,
                       const int* point_list, const float2* xy, const float4* conic_op, const float4* rgbd,
                       const float* bg, float* out_color, float* out_invdepth, float* final_T, int* n_contrib,
                       const int* order, float* accum_w, float* area_proj, float* area_max, int* max_id,
                       const int* tile_order, int chunks, float* scratch, bool cull, cudaStream_t stream);
// floats of `scratch` the forward needs with `chunks` depth chunks (0 for one: no scratch)
size_t render_fwd_scratch_floats(int chunks, int W, int H);
int render_fwd_resident_blocks();

// depth false: the inverse depth has no gradient (dL_dinvdepth unread, may be nullptr; grad's slot 9 gets 0).
void launch_render_bwd(int num_tiles, int tiles_x, int W, int H, const int2* ranges, const int* point_list,
                       const float2* xy, const float4* conic_op, const float4* rgbd, const float* bg,
                       const float* final_T, const int* n_contrib, const float* dL_dcolor, int cs0, int cs1, int cs2,
                       const float* dL_dinvdepth, int ds1, int ds2, float* grad, int chunks, const int* tile_order,
                       bool cull, bool depth, cudaStream_t stream);
int render_bwd_resident_warps();

// The render kernels run their tiles in tile_order (heavy first; nullptr: tile id order). The forward has one
// 256-thread block per tile, the backward several smaller blocks per tile (render.cu's BWD_WARPS).
// launch_tile_work writes the sort keys: work[t] = tile t's number of pairs (n_contrib == nullptr, the
// forward's cost) or its pixels' largest n_contrib (the backward's); ids[t] = t.
void launch_tile_work(int num_tiles, int tiles_x, int W, int H, const int2* ranges, const int* n_contrib, int* work,
                      int* ids, cudaStream_t stream);

void launch_preprocess_bwd(int P, int deg, int M, bool sh_fast, int n2, const float* means3D, const float* scales,
                           const float* rotations, const float* opacities, const float* shs,
                           const float* shs_rest, const float* colors_precomp, const float* cov3D_precomp,
                           const Cam& cam, const int* rank, const float* grad, float* dL_dmeans3D,
                           float* dL_dmeans2D, float* dL_dopacity, float* dL_dshs, float* dL_dshs_rest,
                           float* dL_dcolors, float* dL_dscales, float* dL_drotations, float* dL_dcov3D,
                           cudaStream_t stream);

}  // namespace dgr
