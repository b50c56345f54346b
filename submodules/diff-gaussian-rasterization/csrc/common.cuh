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
constexpr float COLOR_MAX = 1e15f;  // larger colours are culled: their blending gradients would overflow
constexpr int GRAD_STRIDE = 10;  // per-Gaussian screen-space gradients: mx my ca cb cc op r g b invz
constexpr int PRE_BLOCK = 128;   // threads per block of the per-Gaussian kernels
constexpr int SH_PAD = 49;       // shared-memory row stride (floats) of a 48-float SH row: odd, no bank conflicts

__device__ __forceinline__ bool usable_color(float3 c) {
  return fabsf(c.x) <= COLOR_MAX && fabsf(c.y) <= COLOR_MAX && fabsf(c.z) <= COLOR_MAX;  // false for NaN too
}

// A warp moves the 48-float SH rows of Gaussians g0 .. g0+31 between global memory (contiguous, 16-byte
// aligned) and shared memory (row stride SH_PAD) with coalesced 16-byte accesses; rows >= P are skipped.
// Copy the warp's n elements src[0 .. n-1] (rows of PER_ROW elements) into shared memory by put(e, value), BATCH
// loads a lane issued before their stores: a plain loop stores each load before the next trip's loads issue, which
// held a warp to about four loads in flight (SASS); the batches made bonsai's step x0.957 on an H200
// (docs/BENCHMARKS.md, twenty-first session). Only the rows whose bit is set in `rows` (the warp's visible Gaussians)
// are read, the others get zeros: a culled Gaussian's SH is never used, and in a view that sees a third of the
// Gaussians most warps mix both, so reading whole warps' rows moved three times the SH bytes needed.
template <int BATCH, int PER_ROW, typename T, typename Put>
__device__ __forceinline__ void warp_stage(const T* __restrict__ src, int n, int lane, unsigned rows, Put put) {
  const auto load = [&](int e) { return (rows >> (e / PER_ROW)) & 1u ? src[e] : T{}; };
  int e0 = 0;
  for (; e0 + 32 * BATCH <= n; e0 += 32 * BATCH) {
    T v[BATCH];
#pragma unroll
    for (int b = 0; b < BATCH; b++) v[b] = load(e0 + 32 * b + lane);
#pragma unroll
    for (int b = 0; b < BATCH; b++) put(e0 + 32 * b + lane, v[b]);
  }
  for (int e = e0 + lane; e < n; e += 32) put(e, load(e));
}

__device__ __forceinline__ void warp_load_rows48(const float* __restrict__ src, int g0, int P, unsigned rows,
                                                 float* buf, int lane) {
  // a full warp's 384 float4 in two batches of 6 a lane
  warp_stage<6, 12>(reinterpret_cast<const float4*>(src + (size_t)g0 * 48), min(32, P - g0) * 12, lane, rows,
                    [buf](int e, float4 v) {
                      const int r = e / 12, c = (e - r * 12) * 4;
                      float* d = buf + r * SH_PAD + c;
                      d[0] = v.x;
                      d[1] = v.y;
                      d[2] = v.z;
                      d[3] = v.w;
                    });
}

__device__ __forceinline__ void warp_store_rows48(float* __restrict__ dst, int g0, int P, const float* buf, int lane) {
  const int n4 = min(32, P - g0) * 12;
  float4* d4 = reinterpret_cast<float4*>(dst + (size_t)g0 * 48);
  for (int e = lane; e < n4; e += 32) {
    const int r = e / 12, c = (e - r * 12) * 4;
    const float* b = buf + r * SH_PAD + c;
    d4[e] = make_float4(b[0], b[1], b[2], b[3]);
  }
}

// The same for SH given as two arrays, the DC rows dc [P, 3] and the higher bands rest [P, 45] (the model's
// f_dc and f_rest, so the host never concatenates them); rest == nullptr: dc holds whole 48-float rows.
// Each part of the warp's 32 rows is one contiguous range, read and written with coalesced 4-byte accesses.
// The loads in batches (warp_stage; a full warp's rest rows in three of 15 a lane), of the rows of the lanes whose
// `vis` is set (called by the whole warp; none read when no lane's is).
__device__ __forceinline__ void warp_load_sh(const float* __restrict__ dc, const float* __restrict__ rest, int g0,
                                             int P, bool vis, float* buf, int lane) {
  const unsigned rows = __ballot_sync(0xffffffffu, vis);
  if (rows == 0) return;
  if (rest == nullptr) {
    warp_load_rows48(dc, g0, P, rows, buf, lane);
    return;
  }
  const int n = min(32, P - g0);
  warp_stage<3, 3>(dc + (size_t)g0 * 3, n * 3, lane, rows,
                   [buf](int e, float v) { buf[(e / 3) * SH_PAD + e % 3] = v; });
  warp_stage<15, 45>(rest + (size_t)g0 * 45, n * 45, lane, rows,
                     [buf](int e, float v) { buf[(e / 45) * SH_PAD + 3 + e % 45] = v; });
}

__device__ __forceinline__ void warp_store_sh(float* __restrict__ dc, float* __restrict__ rest, int g0, int P,
                                              const float* buf, int lane) {
  if (rest == nullptr) {
    warp_store_rows48(dc, g0, P, buf, lane);
    return;
  }
  const int n = min(32, P - g0);
  float* d = dc + (size_t)g0 * 3;
  for (int e = lane; e < n * 3; e += 32) d[e] = buf[(e / 3) * SH_PAD + e % 3];
  float* r = rest + (size_t)g0 * 45;
  for (int e = lane; e < n * 45; e += 32) r[e] = buf[(e / 45) * SH_PAD + 3 + e % 45];
}

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

// The ellipse q = d^T conic d <= t around a Gaussian's mean where its alpha = opacity * exp(-q/2) can reach 1/255,
// t widened for the kernels' rounding (alpha's exp and the quadratic form), and its half extents X, Y in pixels.
// `drawn` false: opacity below 1/255, no pixel passes. `exact` false: the conic is not positive definite (or not
// finite), no extent is known and every pixel may pass.
struct AlphaEllipse {
  bool drawn = false, exact = false;
  float t = 0.f, detc = 0.f, X = 0.f, Y = 0.f;

  AlphaEllipse() = default;
  __device__ __forceinline__ explicit AlphaEllipse(float4 co) {
    const float ca = co.x, cb = co.y, cc = co.z, op = co.w;
    if (!(op * 255.f >= 0.999f)) return;  // alpha <= opacity < 1/255 everywhere
    drawn = true;
    const float thr = 2.f * logf(fmaxf(255.f * op, 1.f));
    t = thr * 1.001f + 2e-3f;
    detc = ca * cc - cb * cb;
    exact = (ca > 0.f) && (cc > 0.f) && (detc > 0.f) && isfinite(t) && isfinite(detc);
    if (exact) {
      X = sqrtf(t * cc / detc);
      Y = sqrtf(t * ca / detc);
      exact = isfinite(X) && isfinite(Y);
    }
  }

  // The half extents X, Y widened by the margins of every test built on them (may_reach, TileSpan's tile rows).
  __device__ __forceinline__ float reach_x() const { return X * 1.001f + 0.05f; }
  __device__ __forceinline__ float reach_y() const { return Y * 1.001f + 0.05f; }

  // False only where no pixel centre of [x0, x1] x [y0, y1] (pixels) can pass the alpha test: the ellipse's box,
  // with those margins, misses the rect.
  __device__ __forceinline__ bool may_reach(float2 m, float x0, float y0, float x1, float y1) const {
    if (!drawn) return false;
    if (!exact) return true;
    const float ex = reach_x(), ey = reach_y();
    return m.x + ex >= x0 && m.x - ex <= x1 && m.y + ey >= y0 && m.y - ey <= y1;
  }
};

// The tiles a Gaussian really reaches, row by row: tile rows [ty0, ty1), and row(ty) the row's tiles [txa, txb)
// (none when txb <= txa). Start: graphdeco's rect (radius based; the reference never goes beyond it). Within it,
// only tiles that hold a pixel centre where alpha = opacity * exp(-q/2) can reach 1/255 (q = d^T conic d) are
// kept: per tile row, the exact x-interval of the ellipse q <= 2 ln(255 opacity) clipped to the row's pixel strip.
// Thresholds carry margins, so the choice is conservative: a dropped tile has no pixel that passes the alpha test,
// and the image, gradients and stats are those of the full rect. (The count pass walks it with for_each_tile, the
// pair emission with preprocess.cu's emit_gaussian: the same tiles by construction.)
struct TileSpan {
  int x0 = 0, x1 = 0, ty0 = 0, ty1 = 0;
  AlphaEllipse el;  // (el.exact false: not positive definite, the whole rect)
  float mx = 0.f, my = 0.f, ca = 0.f, cb = 0.f, dyL = 0.f, pad = 0.f, ica = 0.f;

  __device__ __forceinline__ TileSpan(float2 m, float4 co, int radius, int tiles_x, int tiles_y) {
    int y0, y1;
    tile_rect(m, (float)radius, tiles_x, tiles_y, x0, y0, x1, y1);
    if (x1 <= x0 || y1 <= y0) return;
    const float cc = co.z;
    ca = co.x;
    cb = co.y;
    el = AlphaEllipse(co);
    if (!el.drawn) return;
    if (!el.exact) {
      ty0 = y0;
      ty1 = y1;
      return;
    }
    mx = m.x;
    my = m.y;
    const float ey = el.reach_y();
    ty0 = max(y0, (int)fminf(fmaxf(floorf((m.y - ey) / TILE), -1.f), (float)tiles_y));
    ty1 = min(y1, (int)fminf(fmaxf(floorf((m.y + ey) / TILE) + 1.f, -1.f), (float)tiles_y));
    dyL = cb * sqrtf(el.t / (el.detc * cc));  // dy of the leftmost point (the rightmost is at -dyL)
    pad = 0.05f + 1e-3f * el.X;
    ica = 1.f / ca;
  }

  __device__ __forceinline__ void row(int ty, int tiles_x, int& txa, int& txb) const {
    if (!el.exact) {
      txa = x0;
      txb = x1;
      return;
    }
    const float Y = el.Y, t = el.t, detc = el.detc;
    const float ya = fmaxf((float)(ty * TILE) - my, -Y);
    const float yb = fminf((float)(ty * TILE + TILE - 1) - my, Y);
    if (ya > yb) {  // the strip misses the ellipse
      txa = txb = 0;
      return;
    }
    const float dl = fminf(fmaxf(dyL, ya), yb);
    const float dr = fminf(fmaxf(-dyL, ya), yb);
    const float xl = (-cb * dl - sqrtf(fmaxf(0.f, ca * t - detc * dl * dl))) * ica;
    const float xr = (-cb * dr + sqrtf(fmaxf(0.f, ca * t - detc * dr * dr))) * ica;
    txa = max(x0, (int)fminf(fmaxf(floorf((mx + xl - pad) / TILE), -1.f), (float)tiles_x));
    txb = min(x1, (int)fminf(fmaxf(floorf((mx + xr + pad) / TILE) + 1.f, -1.f), (float)tiles_x));
  }
};

// Calls emit(tile_id) for every tile of the Gaussian's TileSpan, row by row, and returns how many.
template <typename F>
__device__ __forceinline__ int for_each_tile(float2 m, float4 co, int radius, int tiles_x, int tiles_y, F&& emit) {
  const TileSpan span(m, co, radius, tiles_x, tiles_y);
  int n = 0;
  for (int ty = span.ty0; ty < span.ty1; ty++) {
    int txa, txb;
    span.row(ty, tiles_x, txa, txb);
    for (int tx = txa; tx < txb; tx++, n++) emit(ty * tiles_x + tx);
  }
  return n;
}

}  // namespace dgr
