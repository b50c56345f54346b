// Shared definitions of the tile rasterizer: constants, the camera record, SH basis, the
// per-pixel alpha evaluation and the tile enumeration used by both the counting and the emitting pass.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace dgr {

constexpr int TILE = 16;
constexpr int BLOCK = TILE * TILE;  // threads per tile block
constexpr float NEAR_Z = 0.2f;
constexpr float ALPHA_MIN = 1.0f / 255.0f;
constexpr float ALPHA_MAX = 0.99f;
constexpr float T_MIN = 1e-4f;
constexpr float DILATION = 0.3f;
constexpr float AA_MIN_RATIO = 0.000025f;
constexpr int GRAD_STRIDE = 10;  // per-Gaussian screen-space gradients: mx my ca cb cc op r g b invz

// Camera and image description handed to the per-Gaussian kernels by value.
struct Cam {
  int W, H;
  int tiles_x, tiles_y;
  float tanfovx, tanfovy;
  float focal_x, focal_y;
  float scale_modifier;
  bool antialiasing;
  const float* view;    // 4x4, row-vector convention: p_view = [p, 1] @ view
  const float* proj;    // 4x4, same convention
  const float* campos;  // 3
};

// SH constants (standard real SH in the 3DGS sign convention).
constexpr float SH_C0 = 0.28209479177387814f;
constexpr float SH_C1 = 0.4886025119029199f;
__device__ constexpr float SH_C2[5] = {1.0925484305920792f, -1.0925484305920792f, 0.31539156525252005f,
                                       -1.0925484305920792f, 0.5462742152960396f};
__device__ constexpr float SH_C3[7] = {-0.5900435899266435f, 2.890611442640554f, -0.4570457994644658f,
                                       0.3731763325901154f, -0.4570457994644658f, 1.445305721320277f,
                                       -0.5900435899266435f};

// Basis values b[0..15] at unit direction (x, y, z) for degree <= deg.
__device__ __forceinline__ void sh_basis(int deg, float x, float y, float z, float b[16]) {
  b[0] = SH_C0;
  if (deg < 1) return;
  b[1] = -SH_C1 * y;
  b[2] = SH_C1 * z;
  b[3] = -SH_C1 * x;
  if (deg < 2) return;
  const float xx = x * x, yy = y * y, zz = z * z;
  b[4] = SH_C2[0] * x * y;
  b[5] = SH_C2[1] * y * z;
  b[6] = SH_C2[2] * (2.f * zz - xx - yy);
  b[7] = SH_C2[3] * x * z;
  b[8] = SH_C2[4] * (xx - yy);
  if (deg < 3) return;
  b[9] = SH_C3[0] * y * (3.f * xx - yy);
  b[10] = SH_C3[1] * x * y * z;
  b[11] = SH_C3[2] * y * (4.f * zz - xx - yy);
  b[12] = SH_C3[3] * z * (2.f * zz - 3.f * xx - 3.f * yy);
  b[13] = SH_C3[4] * x * (4.f * zz - xx - yy);
  b[14] = SH_C3[5] * z * (xx - yy);
  b[15] = SH_C3[6] * x * (xx - 3.f * yy);
}

// Partial derivatives of each basis function with respect to x, y, z (for degree <= deg; b0 is constant).
__device__ __forceinline__ void sh_basis_grad(int deg, float x, float y, float z, float bx[16], float by[16],
                                              float bz[16]) {
  bx[0] = by[0] = bz[0] = 0.f;
  if (deg < 1) return;
  bx[1] = 0.f;     by[1] = -SH_C1;  bz[1] = 0.f;
  bx[2] = 0.f;     by[2] = 0.f;     bz[2] = SH_C1;
  bx[3] = -SH_C1;  by[3] = 0.f;     bz[3] = 0.f;
  if (deg < 2) return;
  const float xx = x * x, yy = y * y, zz = z * z;
  bx[4] = SH_C2[0] * y;        by[4] = SH_C2[0] * x;        bz[4] = 0.f;
  bx[5] = 0.f;                 by[5] = SH_C2[1] * z;        bz[5] = SH_C2[1] * y;
  bx[6] = -2.f * SH_C2[2] * x; by[6] = -2.f * SH_C2[2] * y; bz[6] = 4.f * SH_C2[2] * z;
  bx[7] = SH_C2[3] * z;        by[7] = 0.f;                 bz[7] = SH_C2[3] * x;
  bx[8] = 2.f * SH_C2[4] * x;  by[8] = -2.f * SH_C2[4] * y; bz[8] = 0.f;
  if (deg < 3) return;
  bx[9] = SH_C3[0] * 6.f * x * y;
  by[9] = SH_C3[0] * 3.f * (xx - yy);
  bz[9] = 0.f;
  bx[10] = SH_C3[1] * y * z;
  by[10] = SH_C3[1] * x * z;
  bz[10] = SH_C3[1] * x * y;
  bx[11] = SH_C3[2] * -2.f * x * y;
  by[11] = SH_C3[2] * (4.f * zz - xx - 3.f * yy);
  bz[11] = SH_C3[2] * 8.f * y * z;
  bx[12] = SH_C3[3] * -6.f * x * z;
  by[12] = SH_C3[3] * -6.f * y * z;
  bz[12] = SH_C3[3] * (6.f * zz - 3.f * xx - 3.f * yy);
  bx[13] = SH_C3[4] * (4.f * zz - 3.f * xx - yy);
  by[13] = SH_C3[4] * -2.f * x * y;
  bz[13] = SH_C3[4] * 8.f * x * z;
  bx[14] = SH_C3[5] * 2.f * x * z;
  by[14] = SH_C3[5] * -2.f * y * z;
  bz[14] = SH_C3[5] * (xx - yy);
  bx[15] = SH_C3[6] * 3.f * (xx - yy);
  by[15] = SH_C3[6] * -6.f * x * y;
  bz[15] = 0.f;
}

__device__ __forceinline__ bool finitef(float v) { return isfinite(v); }

// Rotation matrix (row-major R[i*3+j]) of the normalised quaternion (w, x, y, z).
__device__ __forceinline__ void quat_to_rot(float w, float x, float y, float z, float R[9]) {
  R[0] = 1.f - 2.f * (y * y + z * z);
  R[1] = 2.f * (x * y - w * z);
  R[2] = 2.f * (x * z + w * y);
  R[3] = 2.f * (x * y + w * z);
  R[4] = 1.f - 2.f * (x * x + z * z);
  R[5] = 2.f * (y * z - w * x);
  R[6] = 2.f * (x * z - w * y);
  R[7] = 2.f * (y * z + w * x);
  R[8] = 1.f - 2.f * (x * x + y * y);
}

// One pixel-Gaussian evaluation, written with explicit rounding intrinsics so that the forward and
// the backward kernel make bit-identical decisions (no compiler-chosen FMA contraction differences).
// Returns alpha (already clamped to ALPHA_MAX) and G = exp(power); ok=false when skipped.
struct AlphaEval {
  float alpha, G, raw, dx, dy;
  bool ok;
};

__device__ __forceinline__ AlphaEval eval_alpha(float2 m, float4 co, float px, float py) {
  AlphaEval e;
  e.dx = __fsub_rn(m.x, px);
  e.dy = __fsub_rn(m.y, py);
  const float dxx = __fmul_rn(e.dx, e.dx);
  const float dyy = __fmul_rn(e.dy, e.dy);
  const float dxy = __fmul_rn(e.dx, e.dy);
  const float quad = __fmaf_rn(co.x, dxx, __fmul_rn(co.z, dyy));
  const float power = __fmaf_rn(-co.y, dxy, __fmul_rn(-0.5f, quad));
  e.G = __expf(power);
  e.raw = __fmul_rn(co.w, e.G);
  e.alpha = fminf(ALPHA_MAX, e.raw);
  e.ok = (power <= 0.f) && (e.alpha >= ALPHA_MIN);
  return e;
}

// Minimum over the rectangle [dx0, dx1] x [dy0, dy1] of q(d) = ca dx^2 + 2 cb dx dy + cc dy^2
// (positive definite: ca > 0, cc > 0, ca cc > cb^2). Exact: interior zero, else the best of the four edges.
__device__ __forceinline__ float quad_min_rect(float ca, float cb, float cc, float dx0, float dx1, float dy0,
                                               float dy1) {
  if (dx0 <= 0.f && dx1 >= 0.f && dy0 <= 0.f && dy1 >= 0.f) return 0.f;
  float best = INFINITY;
  const float ey[2] = {dy0, dy1};
#pragma unroll
  for (int k = 0; k < 2; k++) {
    const float y = ey[k];
    const float x = fminf(fmaxf(-cb * y / ca, dx0), dx1);
    best = fminf(best, ca * x * x + 2.f * cb * x * y + cc * y * y);
  }
  const float ex[2] = {dx0, dx1};
#pragma unroll
  for (int k = 0; k < 2; k++) {
    const float x = ex[k];
    const float y = fminf(fmaxf(-cb * x / cc, dy0), dy1);
    best = fminf(best, ca * x * x + 2.f * cb * x * y + cc * y * y);
  }
  return best;
}

// Screen rect of tiles [x0, x1) x [y0, y1) of a Gaussian at pixel mean m with integer radius r,
// graphdeco's getRect semantics (truncate toward zero, clamp to the grid).
__device__ __forceinline__ void tile_rect(float2 m, float r, int tiles_x, int tiles_y, int& x0, int& y0, int& x1,
                                          int& y1) {
  const float fx0 = (m.x - r) / TILE, fx1 = (m.x + r + TILE - 1) / TILE;
  const float fy0 = (m.y - r) / TILE, fy1 = (m.y + r + TILE - 1) / TILE;
  // clamp in float first (same result as truncate-then-clamp for every finite value, no overflow)
  x0 = (int)fminf(fmaxf(fx0, 0.f), (float)tiles_x);
  x1 = (int)fminf(fmaxf(fx1, 0.f), (float)tiles_x);
  y0 = (int)fminf(fmaxf(fy0, 0.f), (float)tiles_y);
  y1 = (int)fminf(fmaxf(fy1, 0.f), (float)tiles_y);
}

}  // namespace dgr
