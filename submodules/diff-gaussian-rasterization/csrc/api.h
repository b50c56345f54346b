// Torch-facing entry points of the rasterizer (bound to Python in ext.cpp).
#pragma once
#include <torch/extension.h>

#include <map>
#include <string>
#include <vector>

namespace dgr {

// sh is [P, M, 3], or with sh_rest non-empty the DC [P, 1, 3] and sh_rest the bands 1..3 [P, 15, 3] (the model's two
// parameters, read in place). Returns color [3,H,W], invdepth [1,H,W], radii [P] int32, then the buffers the backward
// needs (rank [P], xy, conic_op, rgbd of the V visible Gaussians in depth order, point_list, ranges, final_T,
// n_contrib) and the stats accum_weights, area_proj, area_max [P] and max_contributor [H, W] int32: stats_mode 0
// (StatsMode in kernels.h) computes none, 1 area_max and max_contributor, 2 all four; those not computed are empty.
// pair_capacity > 0: the capacity mode, without the exact mode's host-device sync (the pair count sizes its buffers):
// xy, conic_op and rgbd get P rows, the pair buffers pair_capacity entries, and pair_meta (int32 [3] on the GPU)
// receives [V, pairs, overflow].
// The depth chunks per tile of the render forward and backward at `num_tiles` tiles on this GPU (DGR_FWD_CHUNKS and
// DGR_BWD_CHUNKS: auto or a forced count), for benchmarks and tests.
std::vector<int64_t> render_chunks(int64_t num_tiles);
// The kernel choices the environment makes now (DGR_EMIT, DGR_FWD_CULL, DGR_BWD_CULL), by flag,
// defaults included, so that a benchmark says what it timed without restating the defaults.
std::map<std::string, std::string> render_flags();

std::vector<torch::Tensor> rasterize_forward(const torch::Tensor& background, const torch::Tensor& means3D,
                                             const torch::Tensor& colors, const torch::Tensor& opacity,
                                             const torch::Tensor& scales, const torch::Tensor& rotations,
                                             double scale_modifier, const torch::Tensor& cov3D_precomp,
                                             const torch::Tensor& viewmatrix, const torch::Tensor& projmatrix,
                                             double tanfovx, double tanfovy, int64_t image_height,
                                             int64_t image_width, const torch::Tensor& sh,
                                             const torch::Tensor& sh_rest, int64_t sh_degree,
                                             const torch::Tensor& campos, bool prefiltered, bool antialiasing,
                                             int64_t stats_mode, bool debug, int64_t pair_capacity,
                                             const torch::Tensor& pair_meta);

// Returns dL/d(means2D [P,means2D_dim], colors_precomp, opacity [P,1], means3D, cov3D_precomp, shs, scales, rotations,
// sh_rest); the entries for inputs that were not given are empty. An empty (or undefined) dL_dinvdepth: the inverse
// depth has no gradient, and the render backward skips its terms.
std::vector<torch::Tensor> rasterize_backward(
    const torch::Tensor& background, const torch::Tensor& means3D, const torch::Tensor& colors, const torch::Tensor& opacity, const torch::Tensor& scales,
    const torch::Tensor& rotations, double scale_modifier, const torch::Tensor& cov3D_precomp,
    const torch::Tensor& viewmatrix, const torch::Tensor& projmatrix, double tanfovx, double tanfovy,
    const torch::Tensor& dL_dcolor, const torch::Tensor& dL_dinvdepth, const torch::Tensor& sh,
    const torch::Tensor& sh_rest, int64_t sh_degree,
    const torch::Tensor& campos, const torch::Tensor& rank, const torch::Tensor& xy, const torch::Tensor& conic_op,
    const torch::Tensor& rgbd, const torch::Tensor& point_list, const torch::Tensor& ranges,
    const torch::Tensor& final_T, const torch::Tensor& n_contrib, int64_t means2D_dim, bool antialiasing,
    bool debug);

// The forward preprocessing kernel alone, for stage-by-stage tests: radii [P] int32, xy [P, 2] (pixel means),
// conic_op [P, 4] (conic a, b, c and the effective opacity), rgbd [P, 4] (colour and 1 / view z), tiles_touched
// [P] int32; rows of culled Gaussians (radius 0) are zero. Arguments as rasterize_forward's.
std::vector<torch::Tensor> preprocess_forward(const torch::Tensor& means3D, const torch::Tensor& colors,
                                              const torch::Tensor& opacity, const torch::Tensor& scales,
                                              const torch::Tensor& rotations, double scale_modifier,
                                              const torch::Tensor& cov3D_precomp, const torch::Tensor& viewmatrix,
                                              const torch::Tensor& projmatrix, double tanfovx, double tanfovy,
                                              int64_t image_height, int64_t image_width, const torch::Tensor& sh,
                                              const torch::Tensor& sh_rest, int64_t sh_degree,
                                              const torch::Tensor& campos, bool antialiasing);

torch::Tensor mark_visible(const torch::Tensor& means3D, const torch::Tensor& viewmatrix,
                           const torch::Tensor& projmatrix);

// In-place Adam step on the rows i of param [P, ...] with visible[i]; other rows are untouched
// (value and moments). step is the 1-based step count used for the bias corrections.
void adam_rows_(torch::Tensor& param, const torch::Tensor& grad, torch::Tensor& exp_avg,
                torch::Tensor& exp_avg_sq, const torch::Tensor& visible, double lr, double beta1, double beta2,
                double eps, int64_t step);

// In-place Adam step on up to 8 parameters (the Gaussian groups) in one launch, each with its own lr and
// 1-based step count; visible (bool [P], or empty for all rows) restricts it to the visible rows.
void adam_multi_(std::vector<torch::Tensor> params, const std::vector<torch::Tensor>& grads,
                 std::vector<torch::Tensor> exp_avgs, std::vector<torch::Tensor> exp_avg_sqs,
                 const torch::Tensor& visible, const std::vector<double>& lrs, const std::vector<int64_t>& steps,
                 double beta1, double beta2, double eps);

}  // namespace dgr
