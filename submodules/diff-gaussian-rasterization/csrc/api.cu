// Host side: torch tensors in and out, binning with CUB, kernel launches.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstdlib>
#include <cub/cub.cuh>
#include <string>
#include <tuple>

#include "api.h"
#include "kernels.h"

namespace dgr {
namespace {

#define CHECK_CUDA_T(x, name) TORCH_CHECK((x).is_cuda(), name " must be a CUDA tensor")

void check_launch(bool debug, const char* where) {
  cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "diff_gaussian_rasterization: ", where, ": ", cudaGetErrorString(err));
  if (debug) {
    err = cudaDeviceSynchronize();
    TORCH_CHECK(err == cudaSuccess, "diff_gaussian_rasterization: ", where, " (sync): ", cudaGetErrorString(err));
  }
}

const float* opt_ptr(const torch::Tensor& t) { return t.numel() > 0 ? t.data_ptr<float>() : nullptr; }

torch::Tensor f32c(const torch::Tensor& t, const char* name) {
  if (t.numel() == 0) return t;
  CHECK_CUDA_T(t, "tensor");
  TORCH_CHECK(t.scalar_type() == torch::kFloat32, name, " must be float32");
  return t.contiguous();
}

// The inputs forward and backward share, as float32 contiguous CUDA tensors (empty ones stay empty).
struct Inputs {
  torch::Tensor means3D, colors, opacity, scales, rotations, cov3D, shs, sh_rest, view, proj, campos, bg;
};

Inputs checked_inputs(const torch::Tensor& means3D, const torch::Tensor& colors, const torch::Tensor& opacity,
                      const torch::Tensor& scales, const torch::Tensor& rotations, const torch::Tensor& cov3D,
                      const torch::Tensor& shs, const torch::Tensor& sh_rest, const torch::Tensor& view,
                      const torch::Tensor& proj, const torch::Tensor& campos, const torch::Tensor& bg) {
  if (sh_rest.numel() > 0)
    TORCH_CHECK(shs.dim() == 3 && shs.size(1) == 1 && shs.size(2) == 3 && sh_rest.dim() == 3 && sh_rest.size(1) == 15 &&
                    sh_rest.size(2) == 3 && sh_rest.size(0) == shs.size(0),
                "SH given in two parts must be DC [P, 1, 3] and the higher bands [P, 15, 3]");
  return {f32c(means3D, "means3D"),      f32c(colors, "colors_precomp"), f32c(opacity, "opacities"),
          f32c(scales, "scales"),        f32c(rotations, "rotations"),   f32c(cov3D, "cov3D_precomp"),
          f32c(shs, "shs"),              f32c(sh_rest, "shs (higher bands)"), f32c(view, "viewmatrix"),
          f32c(proj, "projmatrix"),      f32c(campos, "campos"),         f32c(bg, "bg")};
}

Cam make_cam(int H, int W, float tanfovx, float tanfovy, float scale_modifier, bool antialiasing,
             const torch::Tensor& view, const torch::Tensor& proj, const torch::Tensor& campos) {
  Cam cam;
  cam.W = W;
  cam.H = H;
  cam.tiles_x = (W + TILE - 1) / TILE;
  cam.tiles_y = (H + TILE - 1) / TILE;
  cam.tanfovx = tanfovx;
  cam.tanfovy = tanfovy;
  cam.focal_x = W / (2.0f * tanfovx);
  cam.focal_y = H / (2.0f * tanfovy);
  cam.scale_modifier = scale_modifier;
  cam.antialiasing = antialiasing;
  cam.view = view.data_ptr<float>();
  cam.proj = proj.data_ptr<float>();
  cam.campos = campos.data_ptr<float>();
  return cam;
}

// Coefficients per colour channel: shs [P, M, 3], or DC [P, 1, 3] + higher bands [P, M - 1, 3].
int sh_coeffs(const torch::Tensor& shs, const torch::Tensor& sh_rest) {
  return shs.numel() > 0 ? shs.size(1) + (sh_rest.numel() > 0 ? sh_rest.size(1) : 0) : 0;
}

int sh_degree_used(int sh_degree, int M) {
  if (M == 0) return 0;
  int avail = 0;  // largest d <= 3 with (d+1)^2 <= M
  while (avail < 3 && (avail + 2) * (avail + 2) <= M) avail++;
  return std::max(0, std::min((int)sh_degree, avail));
}

// The per-Gaussian inputs the preprocessing reads: P opacities, a colour source and a shape source.
void check_gaussians(int P, const torch::Tensor& opacity, const torch::Tensor& colors, const torch::Tensor& shs,
                     const torch::Tensor& scales, const torch::Tensor& rotations, const torch::Tensor& cov3D) {
  TORCH_CHECK(opacity.numel() == P, "opacities must have P entries");
  TORCH_CHECK(colors.numel() > 0 || shs.numel() > 0 || P == 0, "provide shs or colors_precomp");
  TORCH_CHECK(cov3D.numel() > 0 || (scales.numel() == 3 * P && rotations.numel() == 4 * P),
              "provide scales and rotations, or cov3D_precomp");
}

// The forward preprocessing stages SH rows through shared memory for 16 coefficients, split or 16-byte aligned.
bool sh_fast_path(int M, const torch::Tensor& shs, bool split) {
  return M == 16 && shs.numel() > 0 && (split || reinterpret_cast<uintptr_t>(shs.data_ptr<float>()) % 16 == 0);
}

int bits_for(uint32_t n) {
  int b = 1;
  while (b < 32 && (1u << b) <= n) b++;
  return b;
}

// A two-word environment flag: true where it reads `yes`, false for `no`, `fallback` where unset or empty.
bool env_is(const char* name, const char* yes, const char* no, bool fallback) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == 0) return fallback;
  const std::string v(env);
  TORCH_CHECK(v == yes || v == no, name, " must be ", yes, " or ", no, ", not '", env, "'");
  return v == yes;
}

// The pair emission: by warp (the default) a Gaussian of many pairs is queued for a second kernel whose warps write
// one each (preprocess.cu, emit_kernel), the same pairs in the same places as one thread's walk (DGR_EMIT=thread,
// kept for measurements; on an H200 at 1M Gaussians 50 against 246-281 us, docs/BENCHMARKS.md seventeenth session).
bool emit_by_warp() { return !env_is("DGR_EMIT", "thread", "warp", false); }

// The render kernels' warp culling (render.cu, the kernels' CULL): each warp walks only the staged Gaussians whose
// alpha ellipse may reach its 8x4 pixels. DGR_FWD_CULL for the forward (and its chunks' transmittance pass),
// DGR_BWD_CULL for the backward: on (the default: lego's step x0.93, bonsai's x0.89 with both, the same PSNR;
// docs/BENCHMARKS.md, nineteenth session) or off (the full walk, kept for measurements).
bool fwd_cull() { return env_is("DGR_FWD_CULL", "on", "off", true); }
bool bwd_cull() { return env_is("DGR_BWD_CULL", "on", "off", true); }

// Emit the (tile, rank) pairs, sort them stably by tile (each tile stays in depth order), find the tile
// ranges. Returns the ranks in tile-major order (the point list).
// R: the number of pairs (exact mode) or the buffers' capacity (pc.meta set: sentinel entries after the pairs).
template <typename KeyT>
torch::Tensor bin_pairs(int R, int V, const torch::Tensor& offsets, const torch::Tensor& radius_c,
                        const torch::Tensor& xy_c, const torch::Tensor& conic_c, const Cam& cam, int num_tiles,
                        torch::Tensor& ranges, const PairCapacity& pc, bool warp, bool debug, cudaStream_t stream) {
  const auto iopt = offsets.options();
  const auto kopt = iopt.dtype(sizeof(KeyT) == 2 ? torch::kInt16 : torch::kInt32);
  // four separate buffers, so that only the sorted values stay alive afterwards
  torch::Tensor keys[2] = {torch::empty({R}, kopt), torch::empty({R}, kopt)};
  torch::Tensor vals[2] = {torch::empty({R}, iopt), torch::empty({R}, iopt)};
  KeyT* k0 = reinterpret_cast<KeyT*>(keys[0].data_ptr());
  KeyT* k1 = reinterpret_cast<KeyT*>(keys[1].data_ptr());
  int* v0 = vals[0].data_ptr<int>();
  int* v1 = vals[1].data_ptr<int>();
  torch::Tensor heavy;  // (the warp emission's queue of Gaussians of many pairs)
  if (warp) heavy = torch::empty({(int64_t)V + 2}, iopt);
  launch_emit(V, offsets.data_ptr<int>(), radius_c.data_ptr<int>(),
              reinterpret_cast<const float2*>(xy_c.data_ptr<float>()),
              reinterpret_cast<const float4*>(conic_c.data_ptr<float>()), cam.tiles_x, cam.tiles_y, k0, v0, pc,
              warp ? heavy.data_ptr<int>() : nullptr, stream);
  check_launch(debug, "emit");
  cub::DoubleBuffer<KeyT> kb(k0, k1);
  cub::DoubleBuffer<int> vb(v0, v1);
  const int end_bit = bits_for((uint32_t)num_tiles);  // covers the sentinel id num_tiles too
  size_t temp_bytes = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, kb, vb, R, 0, end_bit, stream);
  auto temp = torch::empty({(int64_t)temp_bytes}, iopt.dtype(torch::kUInt8));
  cub::DeviceRadixSort::SortPairs(temp.data_ptr(), temp_bytes, kb, vb, R, 0, end_bit, stream);
  check_launch(debug, "tile sort");
  launch_identify_ranges(R, kb.Current(), num_tiles, reinterpret_cast<int2*>(ranges.data_ptr<int>()), stream);
  check_launch(debug, "ranges");
  return vals[vb.selector];
}

// Tiles in decreasing order of their work estimate (launch_tile_work; max_work bounds it). Blocks start
// roughly in launch order, so with the heavy tiles first the light ones fill the end of the grid instead
// of leaving most multiprocessors idle behind a few long tiles.
torch::Tensor heavy_first(int num_tiles, int tiles_x, int W, int H, const torch::Tensor& ranges, const int* n_contrib,
                          int64_t max_work, cudaStream_t stream) {
  const auto iopt = ranges.options();
  auto in = torch::empty({2, num_tiles}, iopt), out = torch::empty({2, num_tiles}, iopt);
  int* work = in.data_ptr<int>();
  int* ids = work + num_tiles;
  int* work_sorted = out.data_ptr<int>();
  int* order = work_sorted + num_tiles;
  launch_tile_work(num_tiles, tiles_x, W, H, reinterpret_cast<const int2*>(ranges.data_ptr<int>()), n_contrib, work,
                   ids, stream);
  const int end_bit = bits_for((uint32_t)std::min<int64_t>(max_work, INT32_MAX));
  size_t temp_bytes = 0;
  cub::DeviceRadixSort::SortPairsDescending(nullptr, temp_bytes, work, work_sorted, ids, order, num_tiles, 0, end_bit,
                                            stream);
  auto temp = torch::empty({(int64_t)temp_bytes}, iopt.dtype(torch::kUInt8));
  cub::DeviceRadixSort::SortPairsDescending(temp.data_ptr(), temp_bytes, work, work_sorted, ids, order, num_tiles, 0,
                                            end_bit, stream);
  return out[1];
}

int64_t multiprocessors() {
  int device = 0, n = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
  return (int64_t)n;
}

// Depth chunks that turn `units` (the warps or blocks a render's tiles give alone) into about four waves of the
// GPU's `resident` ones: 1 where the tiles give four already, at most 8.
int chunks_for_four_waves(int64_t units, int64_t resident) {
  return (int)std::clamp<int64_t>(4 * resident / std::max<int64_t>(units, 1), 1, 8);
}

// A chunk count's environment flag: `automatic` where it is unset or "auto", else a number from 1 to `most`.
int chunks_flag(const char* name, int most, int automatic) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == 0 || std::string(env) == "auto") return automatic;
  char* rest = nullptr;
  const long n = std::strtol(env, &rest, 10);
  // (the bound as text: a number streamed into the message crashed the GPU machine's build inside ostream's integer
  // insert, a copy instantiated in this library; text goes through another path, docs/BENCHMARKS.md seventeenth)
  TORCH_CHECK(*rest == 0 && n >= 1 && n <= most, name, " must be auto or a number of chunks from 1 to ",
              std::to_string(most), ", not '", env, "'");
  return (int)n;
}

// Depth chunks per tile of the render backward (render.cu): four waves of warps where the tiles alone give fewer
// (lego's 400x400 gets 3, bonsai's 800x533 one: on an H200 lego's step 2.22 against 2.45 ms, docs/BENCHMARKS.md,
// twelfth session). DGR_BWD_CHUNKS=N forces N, for measurements and tests.
int bwd_chunks(int num_tiles) {
  // (the GPU is asked once per process: no runtime query inside a CUDA graph's capture, which follows a warm-up step)
  static const int64_t resident = render_bwd_resident_warps() * multiprocessors();
  return chunks_flag("DGR_BWD_CHUNKS", 64, chunks_for_four_waves((int64_t)num_tiles * (BLOCK / 32), resident));
}

// Depth chunks per tile of the render forward (render.cu, render_fwd_kernel's CHUNKED; its scratch is about 9
// floats a pixel and chunk). Its extra passes (the transmittance prefix, the merge) pay only where the tiles leave
// the GPU short of one wave of blocks: there four waves (lego's 400x400, 625 tiles: 6 chunks, 1.60 against 1.79
// ms/step on an H200; 8: 1.58), elsewhere one (bonsai's 800x533, 1,700 tiles: 2 and 4 chunks gained nothing, x1.019
// and x1.004; paired over four seeds their PSNR moved +0.23 (-0.06, +0.51) and -0.11 (-0.56, +0.34) dB:
// docs/BENCHMARKS.md, fifteenth session). DGR_FWD_CHUNKS=N forces N, for measurements and tests.
int fwd_chunks(int num_tiles) {
  static const int64_t resident = render_fwd_resident_blocks() * multiprocessors();  // (once, as bwd_chunks)
  return chunks_flag("DGR_FWD_CHUNKS", 16, num_tiles >= resident ? 1 : chunks_for_four_waves(num_tiles, resident));
}

}  // namespace

std::vector<int64_t> render_chunks(int64_t num_tiles) {
  return {fwd_chunks((int)num_tiles), bwd_chunks((int)num_tiles)};
}

std::map<std::string, std::string> render_flags() {
  return {{"DGR_EMIT", emit_by_warp() ? "warp" : "thread"},
          {"DGR_FWD_CULL", fwd_cull() ? "on" : "off"},
          {"DGR_BWD_CULL", bwd_cull() ? "on" : "off"}};
}

std::vector<torch::Tensor> rasterize_forward(const torch::Tensor& background, const torch::Tensor& means3D_in,
                                             const torch::Tensor& colors_in, const torch::Tensor& opacity_in,
                                             const torch::Tensor& scales_in, const torch::Tensor& rotations_in,
                                             double scale_modifier, const torch::Tensor& cov3D_in,
                                             const torch::Tensor& viewmatrix, const torch::Tensor& projmatrix,
                                             double tanfovx, double tanfovy, int64_t image_height,
                                             int64_t image_width, const torch::Tensor& sh_in,
                                             const torch::Tensor& sh_rest_in, int64_t sh_degree,
                                             const torch::Tensor& campos, bool prefiltered, bool antialiasing,
                                             int64_t stats_mode, bool debug, int64_t pair_capacity,
                                             const torch::Tensor& pair_meta) {
  (void)prefiltered;
  TORCH_CHECK(means3D_in.dim() == 2 && means3D_in.size(1) == 3, "means3D must be [P, 3]");
  CHECK_CUDA_T(means3D_in, "means3D");
  const at::cuda::CUDAGuard guard(means3D_in.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const int P = means3D_in.size(0);
  const int H = image_height, W = image_width;
  const auto [means3D, colors, opacity, scales, rotations, cov3D, shs, sh_rest, view, proj, cpos, bg] =
      checked_inputs(means3D_in, colors_in, opacity_in, scales_in, rotations_in, cov3D_in, sh_in, sh_rest_in,
                     viewmatrix, projmatrix, campos, background);
  check_gaussians(P, opacity, colors, shs, scales, rotations, cov3D);
  TORCH_CHECK(stats_mode >= STATS_NONE && stats_mode <= STATS_ALL, "stats_mode must be 0, 1 or 2");
  const int M = sh_coeffs(shs, sh_rest);
  const int deg = sh_degree_used(sh_degree, M);
  const bool split = sh_rest.numel() > 0;

  const auto fopt = means3D.options().dtype(torch::kFloat32);
  const auto iopt = means3D.options().dtype(torch::kInt32);
  const Cam cam = make_cam(H, W, tanfovx, tanfovy, scale_modifier, antialiasing, view, proj, cpos);
  const int num_tiles = cam.tiles_x * cam.tiles_y;
  // the environment's flags, read before any work: a bad value stops the first render, the backward's chunk count
  // too (thrown in a backward it would surface from autograd's device thread, mid-step)
  const int asked_chunks = fwd_chunks(num_tiles);
  (void)bwd_chunks(num_tiles);
  (void)bwd_cull();
  const bool cull = fwd_cull();
  const bool warp_emission = emit_by_warp();

  const bool sh_fast = sh_fast_path(M, shs, split);
  // The capacity mode: no host-device sync. The compacted arrays get P rows, the pair buffers pair_capacity
  // entries, and the kernels read V and the pair count from pair_meta = [V, pairs, overflow] (int32, on the
  // device, written by this call; overflow = 1 when the pairs did not fit and the deepest were dropped).
  const bool capacity_mode = pair_capacity > 0;
  if (capacity_mode) {
    TORCH_CHECK(pair_capacity <= INT32_MAX, "pair_capacity must be below 2^31");
    TORCH_CHECK(pair_meta.is_cuda() && pair_meta.scalar_type() == torch::kInt32 && pair_meta.numel() == 3 &&
                    pair_meta.is_contiguous() && pair_meta.device() == means3D.device(),
                "pair_capacity > 0 needs pair_meta: a contiguous int32 tensor of 3 entries on the Gaussians' GPU");
    C10_CUDA_CHECK(cudaMemsetAsync(pair_meta.data_ptr<int>(), 0, 3 * sizeof(int), stream));
  }
  auto radii = torch::empty({P}, iopt);  // (every entry written by the preprocessing)
  auto out_color = torch::empty({3, H, W}, fopt);
  auto out_invdepth = torch::empty({1, H, W}, fopt);
  auto final_T = torch::empty({H, W}, fopt);
  auto n_contrib = torch::empty({H, W}, iopt);
  auto ranges = torch::zeros({num_tiles, 2}, iopt);
  // render data of the visible Gaussians, in depth order (index = rank); rank[g] = -1 when culled
  torch::Tensor xy_c = torch::empty({0, 2}, fopt), conic_c = torch::empty({0, 4}, fopt),
                rgbd_c = torch::empty({0, 4}, fopt);
  // every entry written: the culled ones' -1 by the preprocessing, the others' rank by the compaction
  torch::Tensor rank = torch::empty({P}, iopt);
  torch::Tensor order = torch::empty({0}, iopt);
  torch::Tensor point_list = torch::empty({0}, iopt);
  // three distinct tensors even when empty (autograd outputs must not alias)
  const bool all_stats = stats_mode == STATS_ALL;
  torch::Tensor accum_w = torch::zeros({all_stats ? P : 0}, fopt);
  torch::Tensor area_proj = torch::zeros({all_stats ? P : 0}, fopt);
  torch::Tensor area_max = torch::zeros({stats_mode != STATS_NONE ? P : 0}, fopt);
  torch::Tensor max_id = torch::empty({stats_mode != STATS_NONE ? H : 0, W}, iopt);  // (every pixel written)

  if (P > 0) {
    auto splats = torch::empty({P, (int64_t)(sizeof(Splat) / sizeof(float))}, fopt);
    auto tiles_touched = torch::empty({P}, iopt);
    auto depth_keys = torch::empty({P}, iopt);
    auto depth_index = torch::empty({P}, iopt);  // 0 .. P-1, the depth sort's values
    launch_preprocess_fwd(P, deg, M, sh_fast, means3D.data_ptr<float>(), opt_ptr(scales), opt_ptr(rotations),
                          opacity.data_ptr<float>(), opt_ptr(shs), opt_ptr(sh_rest), opt_ptr(colors), opt_ptr(cov3D),
                          cam, radii.data_ptr<int>(), reinterpret_cast<Splat*>(splats.data_ptr<float>()),
                          reinterpret_cast<uint32_t*>(depth_keys.data_ptr<int>()), depth_index.data_ptr<int>(),
                          tiles_touched.data_ptr<int>(), rank.data_ptr<int>(), stream);
    check_launch(debug, "preprocess");

    // Depth order of the Gaussians (culled ones carry the largest key and come last).
    order = torch::empty({P}, iopt);
    auto offsets = torch::empty({P}, iopt);
    auto meta = capacity_mode ? pair_meta : torch::empty({2}, iopt);  // [V, R(, overflow)]
    {
      auto keys_out = torch::empty({P}, iopt);
      {
        size_t temp_bytes = 0;
        cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, (const uint32_t*)nullptr, (uint32_t*)nullptr,
                                        (const int*)nullptr, (int*)nullptr, P, 0, 32, stream);
        auto temp = torch::empty({(int64_t)temp_bytes}, means3D.options().dtype(torch::kUInt8));
        cub::DeviceRadixSort::SortPairs(temp.data_ptr(), temp_bytes,
                                        reinterpret_cast<const uint32_t*>(depth_keys.data_ptr<int>()),
                                        reinterpret_cast<uint32_t*>(keys_out.data_ptr<int>()),
                                        depth_index.data_ptr<int>(), order.data_ptr<int>(), P, 0, 32, stream);
        check_launch(debug, "depth sort");
      }
      // Offsets of each Gaussian's (tile, Gaussian) pairs, in depth order; V and R in one small copy.
      auto counts_sorted = torch::empty({P}, iopt);
      launch_gather_counts(P, order.data_ptr<int>(), reinterpret_cast<const uint32_t*>(keys_out.data_ptr<int>()),
                           tiles_touched.data_ptr<int>(), counts_sorted.data_ptr<int>(), meta.data_ptr<int>(), stream);
      size_t temp_bytes = 0;
      cub::DeviceScan::InclusiveSum(nullptr, temp_bytes, (const int*)nullptr, (int*)nullptr, P, stream);
      auto temp = torch::empty({(int64_t)temp_bytes}, means3D.options().dtype(torch::kUInt8));
      cub::DeviceScan::InclusiveSum(temp.data_ptr(), temp_bytes, counts_sorted.data_ptr<int>(),
                                    offsets.data_ptr<int>(), P, stream);
      launch_copy_total(P, offsets.data_ptr<int>(), meta.data_ptr<int>(), stream);
      check_launch(debug, "scan");
    }
    int V = P, R = static_cast<int>(pair_capacity);
    if (!capacity_mode) {  // the one host-device sync of the exact mode: the buffers' sizes
      const auto meta_h = meta.cpu();
      V = meta_h.data_ptr<int>()[0];
      R = meta_h.data_ptr<int>()[1];
    }
    const PairCapacity pc{R, capacity_mode ? meta.data_ptr<int>() : nullptr};
    xy_c = torch::empty({V, 2}, fopt);
    conic_c = torch::empty({V, 4}, fopt);
    rgbd_c = torch::empty({V, 4}, fopt);
    auto radius_c = torch::empty({V}, iopt);
    launch_compact(P, V, pc.meta, order.data_ptr<int>(), reinterpret_cast<const Splat*>(splats.data_ptr<float>()),
                   reinterpret_cast<float2*>(xy_c.data_ptr<float>()),
                   reinterpret_cast<float4*>(conic_c.data_ptr<float>()),
                   reinterpret_cast<float4*>(rgbd_c.data_ptr<float>()), radius_c.data_ptr<int>(),
                   rank.data_ptr<int>(), stream);
    check_launch(debug, "compact");
    splats.reset();  // free the per-Gaussian temporaries before the pair buffers are allocated
    tiles_touched.reset();
    depth_keys.reset();
    depth_index.reset();
    if (R > 0) {
      if (num_tiles < 65535)
        point_list = bin_pairs<uint16_t>(R, V, offsets, radius_c, xy_c, conic_c, cam, num_tiles, ranges, pc,
                                         warp_emission, debug, stream);
      else
        point_list = bin_pairs<uint32_t>(R, V, offsets, radius_c, xy_c, conic_c, cam, num_tiles, ranges, pc,
                                         warp_emission, debug, stream);
    }
  }
  torch::Tensor tile_order = torch::empty({0}, iopt);
  if (point_list.numel() > 0) {
    tile_order = heavy_first(num_tiles, cam.tiles_x, W, H, ranges, nullptr, point_list.numel(), stream);
    check_launch(debug, "tile order");
  }
  const int chunks = point_list.numel() > 0 ? asked_chunks : 1;
  torch::Tensor scratch;  // (none for one chunk)
  if (chunks > 1) scratch = torch::empty({(int64_t)render_fwd_scratch_floats(chunks, W, H)}, fopt);
  launch_render_fwd(static_cast<int>(stats_mode), num_tiles, cam.tiles_x, W, H, reinterpret_cast<const int2*>(ranges.data_ptr<int>()),
                    point_list.numel() > 0 ? point_list.data_ptr<int>() : nullptr,
                    reinterpret_cast<const float2*>(xy_c.data_ptr<float>()),
                    reinterpret_cast<const float4*>(conic_c.data_ptr<float>()),
                    reinterpret_cast<const float4*>(rgbd_c.data_ptr<float>()), bg.data_ptr<float>(),
                    out_color.data_ptr<float>(), out_invdepth.data_ptr<float>(), final_T.data_ptr<float>(),
                    n_contrib.data_ptr<int>(), order.numel() > 0 ? order.data_ptr<int>() : nullptr,
                    all_stats ? accum_w.data_ptr<float>() : nullptr, all_stats ? area_proj.data_ptr<float>() : nullptr,
                    stats_mode != STATS_NONE ? area_max.data_ptr<float>() : nullptr,
                    stats_mode != STATS_NONE ? max_id.data_ptr<int>() : nullptr,
                    tile_order.numel() > 0 ? tile_order.data_ptr<int>() : nullptr, chunks,
                    scratch.defined() ? scratch.data_ptr<float>() : nullptr, cull, stream);
  check_launch(debug, "render");
  return {out_color, out_invdepth, radii,     rank,     xy_c,      conic_c,  rgbd_c,
          point_list, ranges,      final_T,   n_contrib, accum_w,  area_proj, area_max, max_id};
}

std::vector<torch::Tensor> rasterize_backward(
    const torch::Tensor& background, const torch::Tensor& means3D_in, const torch::Tensor& colors_in, const torch::Tensor& opacity_in, const torch::Tensor& scales_in,
    const torch::Tensor& rotations_in, double scale_modifier, const torch::Tensor& cov3D_in,
    const torch::Tensor& viewmatrix, const torch::Tensor& projmatrix, double tanfovx, double tanfovy,
    const torch::Tensor& dL_dcolor_in, const torch::Tensor& dL_dinvdepth_in, const torch::Tensor& sh_in,
    const torch::Tensor& sh_rest_in, int64_t sh_degree, const torch::Tensor& campos, const torch::Tensor& rank, const torch::Tensor& xy,
    const torch::Tensor& conic_op, const torch::Tensor& rgbd, const torch::Tensor& point_list,
    const torch::Tensor& ranges, const torch::Tensor& final_T, const torch::Tensor& n_contrib, int64_t means2D_dim,
    bool antialiasing, bool debug) {
  const at::cuda::CUDAGuard guard(means3D_in.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const int P = means3D_in.size(0);
  const int H = final_T.size(0), W = final_T.size(1);
  const auto [means3D, colors, opacity, scales, rotations, cov3D, shs, sh_rest, view, proj, cpos, bg] =
      checked_inputs(means3D_in, colors_in, opacity_in, scales_in, rotations_in, cov3D_in, sh_in, sh_rest_in,
                     viewmatrix, projmatrix, campos, background);
  // upstream gradients are read through their strides (no copy when, e.g., a sum expanded them)
  const auto dL_dcolor = dL_dcolor_in.to(torch::kFloat32);
  // an undefined or empty grad of invdepth: the inverse depth is not in the loss (the render backward skips its terms)
  const bool depth = dL_dinvdepth_in.defined() && dL_dinvdepth_in.numel() > 0;
  const auto dL_dinvdepth = depth ? dL_dinvdepth_in.to(torch::kFloat32) : torch::Tensor();
  TORCH_CHECK(dL_dcolor.is_cuda() && dL_dcolor.dim() == 3 && dL_dcolor.size(0) == 3 && dL_dcolor.size(1) == H &&
                  dL_dcolor.size(2) == W, "grad of color must be [3, H, W] on the GPU");
  TORCH_CHECK(!depth || (dL_dinvdepth.is_cuda() && dL_dinvdepth.dim() == 3 && dL_dinvdepth.size(1) == H &&
                         dL_dinvdepth.size(2) == W), "grad of invdepth must be [1, H, W] on the GPU");
  const int ds1 = depth ? (int)dL_dinvdepth.stride(1) : 0, ds2 = depth ? (int)dL_dinvdepth.stride(2) : 0;
  const int M = sh_coeffs(shs, sh_rest);
  const int deg = sh_degree_used(sh_degree, M);
  const bool split = sh_rest.numel() > 0;
  const Cam cam = make_cam(H, W, tanfovx, tanfovy, scale_modifier, antialiasing, view, proj, cpos);
  const int num_tiles = cam.tiles_x * cam.tiles_y;
  const auto fopt = means3D.options().dtype(torch::kFloat32);

  auto dL_dmeans3D = torch::empty({P, 3}, fopt);
  const int n2 = means2D_dim == 2 ? 2 : 3;
  auto dL_dmeans2D = torch::empty({P, n2}, fopt);
  auto dL_dopacity = torch::empty({P, 1}, fopt);
  auto dL_dshs = shs.numel() > 0 ? torch::empty_like(shs) : torch::empty({0}, fopt);
  auto dL_dsh_rest = split ? torch::empty_like(sh_rest) : torch::empty({0}, fopt);
  auto dL_dcolors = colors.numel() > 0 ? torch::empty({P, 3}, fopt) : torch::empty({0}, fopt);
  const bool use_cov = cov3D.numel() > 0;
  auto dL_dcov3D = use_cov ? torch::empty({P, 6}, fopt) : torch::empty({0}, fopt);
  auto dL_dscales = use_cov ? torch::empty({0}, fopt) : torch::empty({P, 3}, fopt);
  auto dL_drotations = use_cov ? torch::empty({0}, fopt) : torch::empty({P, 4}, fopt);
  if (P == 0)
    return {dL_dmeans2D, dL_dcolors, dL_dopacity, dL_dmeans3D, dL_dcov3D, dL_dshs, dL_dscales, dL_drotations,
            dL_dsh_rest};

  const int V = xy.size(0);
  // screen-space gradients of the visible Gaussians (by rank); zeroed: without a depth gradient slot 9 stays 0
  auto grad = torch::zeros({V, GRAD_STRIDE}, fopt);
  if (point_list.numel() > 0) {
    const auto tile_order =
        heavy_first(num_tiles, cam.tiles_x, W, H, ranges, n_contrib.data_ptr<int>(), point_list.numel(), stream);
    check_launch(debug, "tile order");
    launch_render_bwd(num_tiles, cam.tiles_x, W, H, reinterpret_cast<const int2*>(ranges.data_ptr<int>()),
                      point_list.data_ptr<int>(), reinterpret_cast<const float2*>(xy.data_ptr<float>()),
                      reinterpret_cast<const float4*>(conic_op.data_ptr<float>()),
                      reinterpret_cast<const float4*>(rgbd.data_ptr<float>()), bg.data_ptr<float>(),
                      final_T.data_ptr<float>(), n_contrib.data_ptr<int>(), dL_dcolor.data_ptr<float>(),
                      (int)dL_dcolor.stride(0), (int)dL_dcolor.stride(1), (int)dL_dcolor.stride(2),
                      depth ? dL_dinvdepth.data_ptr<float>() : nullptr, ds1, ds2, grad.data_ptr<float>(),
                      bwd_chunks(num_tiles), tile_order.numel() > 0 ? tile_order.data_ptr<int>() : nullptr,
                      bwd_cull(), depth, stream);
    check_launch(debug, "render backward");
  }
  // (whole rows are also written back to dL_dshs with 16-byte stores)
  const bool sh_fast = sh_fast_path(M, shs, split) &&
                       (split || reinterpret_cast<uintptr_t>(dL_dshs.data_ptr<float>()) % 16 == 0);
  launch_preprocess_bwd(P, deg, M, sh_fast, n2, means3D.data_ptr<float>(), opt_ptr(scales), opt_ptr(rotations),
                        opacity.data_ptr<float>(), opt_ptr(shs), opt_ptr(sh_rest), opt_ptr(colors), opt_ptr(cov3D),
                        cam, rank.data_ptr<int>(), grad.data_ptr<float>(), dL_dmeans3D.data_ptr<float>(),
                        dL_dmeans2D.data_ptr<float>(), dL_dopacity.data_ptr<float>(),
                        shs.numel() > 0 ? dL_dshs.data_ptr<float>() : nullptr,
                        split ? dL_dsh_rest.data_ptr<float>() : nullptr,
                        colors.numel() > 0 ? dL_dcolors.data_ptr<float>() : nullptr,
                        use_cov ? nullptr : dL_dscales.data_ptr<float>(),
                        use_cov ? nullptr : dL_drotations.data_ptr<float>(),
                        use_cov ? dL_dcov3D.data_ptr<float>() : nullptr, stream);
  check_launch(debug, "preprocess backward");
  return {dL_dmeans2D, dL_dcolors, dL_dopacity, dL_dmeans3D, dL_dcov3D, dL_dshs, dL_dscales, dL_drotations,
          dL_dsh_rest};
}

std::vector<torch::Tensor> preprocess_forward(const torch::Tensor& means3D_in, const torch::Tensor& colors_in,
                                              const torch::Tensor& opacity_in, const torch::Tensor& scales_in,
                                              const torch::Tensor& rotations_in, double scale_modifier,
                                              const torch::Tensor& cov3D_in, const torch::Tensor& viewmatrix,
                                              const torch::Tensor& projmatrix, double tanfovx, double tanfovy,
                                              int64_t image_height, int64_t image_width, const torch::Tensor& sh_in,
                                              const torch::Tensor& sh_rest_in, int64_t sh_degree,
                                              const torch::Tensor& campos, bool antialiasing) {
  TORCH_CHECK(means3D_in.dim() == 2 && means3D_in.size(1) == 3, "means3D must be [P, 3]");
  CHECK_CUDA_T(means3D_in, "means3D");
  const at::cuda::CUDAGuard guard(means3D_in.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const int P = means3D_in.size(0);
  const auto no_bg = torch::empty({0}, means3D_in.options());
  const auto [means3D, colors, opacity, scales, rotations, cov3D, shs, sh_rest, view, proj, cpos, bg] =
      checked_inputs(means3D_in, colors_in, opacity_in, scales_in, rotations_in, cov3D_in, sh_in, sh_rest_in,
                     viewmatrix, projmatrix, campos, no_bg);
  check_gaussians(P, opacity, colors, shs, scales, rotations, cov3D);
  const int M = sh_coeffs(shs, sh_rest);
  const bool split = sh_rest.numel() > 0;
  const Cam cam = make_cam(image_height, image_width, tanfovx, tanfovy, scale_modifier, antialiasing, view, proj,
                           cpos);
  const auto fopt = means3D.options().dtype(torch::kFloat32);
  const auto iopt = means3D.options().dtype(torch::kInt32);
  // zeros: the kernel writes the splats of the drawn Gaussians only
  auto radii = torch::zeros({P}, iopt);
  auto splats = torch::zeros({P, (int64_t)(sizeof(Splat) / sizeof(float))}, fopt);
  auto tiles_touched = torch::zeros({P}, iopt);
  auto depth_keys = torch::empty({P}, iopt);
  launch_preprocess_fwd(P, sh_degree_used(sh_degree, M), M, sh_fast_path(M, shs, split), means3D.data_ptr<float>(),
                        opt_ptr(scales), opt_ptr(rotations), opacity.data_ptr<float>(), opt_ptr(shs),
                        opt_ptr(sh_rest), opt_ptr(colors), opt_ptr(cov3D), cam, radii.data_ptr<int>(),
                        reinterpret_cast<Splat*>(splats.data_ptr<float>()),
                        reinterpret_cast<uint32_t*>(depth_keys.data_ptr<int>()), nullptr, tiles_touched.data_ptr<int>(),
                        nullptr, stream);
  check_launch(false, "preprocess stage");
  // (the splat's words: xy, radius and a spare, conic and opacity, colour and inverse depth)
  return {radii, splats.slice(1, 0, 2).contiguous(), splats.slice(1, 4, 8).contiguous(),
          splats.slice(1, 8, 12).contiguous(), tiles_touched};
}

torch::Tensor mark_visible(const torch::Tensor& means3D_in, const torch::Tensor& viewmatrix,
                           const torch::Tensor& projmatrix) {
  (void)projmatrix;
  const at::cuda::CUDAGuard guard(means3D_in.device());
  const auto means3D = f32c(means3D_in, "means3D");
  const auto view = f32c(viewmatrix, "viewmatrix");
  const int P = means3D.size(0);
  auto visible = torch::empty({P}, means3D.options().dtype(torch::kBool));
  launch_mark_visible(P, means3D.data_ptr<float>(), view.data_ptr<float>(), visible.data_ptr<bool>(),
                      c10::cuda::getCurrentCUDAStream().stream());
  check_launch(false, "markVisible");
  return visible;
}

}  // namespace dgr
