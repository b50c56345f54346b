// Forward preprocessing (projection, SH colour, tile counting) and the binning helpers.
#include "geometry.cuh"
#include "kernels.h"

namespace dgr {

// Enumerate the tiles a Gaussian really reaches: its graphdeco rect, narrowed to the bounding box of the
// ellipse where alpha can reach 1/255, and then tile by tile the exact minimum of the quadratic form over the
// tile's pixel-centre rectangle. Conservative (with float margins): a skipped tile holds no pixel where this
// Gaussian passes the alpha >= 1/255 test, so the image, gradients and stats equal the full-rect result.
// keys == nullptr: only count. Both passes run this one (non-inlined) function, so they agree exactly.
__device__ __noinline__ int tile_pass(float2 m, float4 co, int radius, int tiles_x, int tiles_y, uint32_t* keys,
                                      int* vals, int gid, int cap) {
  int x0, y0, x1, y1;
  tile_rect(m, (float)radius, tiles_x, tiles_y, x0, y0, x1, y1);
  if (x1 <= x0 || y1 <= y0) return 0;
  const float ca = co.x, cb = co.y, cc = co.z, op = co.w;
  // alpha = min(0.99, op G) >= 1/255 needs op >= 1/255 (G <= 1); keep a relative margin
  if (!(op * 255.f >= 0.999f)) return 0;
  const float thr = 2.f * logf(fmaxf(255.f * op, 1.f));  // q <= thr  <=>  op exp(-q/2) >= 1/255
  const float detc = ca * cc - cb * cb;
  const bool cull = (ca > 0.f) && (cc > 0.f) && (detc > 0.f) && isfinite(thr) && isfinite(detc);
  int tx0 = x0, tx1 = x1, ty0 = y0, ty1 = y1;
  const float t = thr + 1e-3f;
  if (cull) {
    const float ex = sqrtf(t * cc / detc) * 1.001f + 0.05f;
    const float ey = sqrtf(t * ca / detc) * 1.001f + 0.05f;
    if (isfinite(ex) && isfinite(ey)) {
      tx0 = max(x0, (int)fminf(fmaxf(floorf((m.x - ex) / TILE), -1.f), (float)tiles_x));
      tx1 = min(x1, (int)fminf(fmaxf(floorf((m.x + ex) / TILE) + 1.f, -1.f), (float)tiles_x));
      ty0 = max(y0, (int)fminf(fmaxf(floorf((m.y - ey) / TILE), -1.f), (float)tiles_y));
      ty1 = min(y1, (int)fminf(fmaxf(floorf((m.y + ey) / TILE) + 1.f, -1.f), (float)tiles_y));
    }
  }
  int n = 0;
  const float acb = fabsf(cb);
  for (int ty = ty0; ty < ty1; ty++) {
    const float dy0 = (float)(ty * TILE) - m.y, dy1 = dy0 + (float)(TILE - 1);
    const float mdy = fmaxf(fabsf(dy0), fabsf(dy1));
    for (int tx = tx0; tx < tx1; tx++) {
      if (cull) {
        const float dx0 = (float)(tx * TILE) - m.x, dx1 = dx0 + (float)(TILE - 1);
        const float mdx = fmaxf(fabsf(dx0), fabsf(dx1));
        const float q = quad_min_rect(ca, cb, cc, dx0, dx1, dy0, dy1);
        const float S = (ca + acb) * mdx * mdx + (cc + acb) * mdy * mdy;
        if (q > t + 1e-5f * S) continue;
      }
      if (keys != nullptr && n < cap) {
        keys[n] = (uint32_t)(ty * tiles_x + tx);
        vals[n] = gid;
      }
      n++;
    }
  }
  return n;
}

__global__ void preprocess_fwd_kernel(int P, int deg, int M, const float* __restrict__ means3D,
                                      const float* __restrict__ scales, const float* __restrict__ rotations,
                                      const float* __restrict__ opacities, const float* __restrict__ shs,
                                      const float* __restrict__ colors_precomp,
                                      const float* __restrict__ cov3D_precomp, const Cam cam, int* radii,
                                      float2* xy, float4* conic_op, float4* rgbd, uint32_t* depth_keys,
                                      int* tiles_touched) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= P) return;
  radii[i] = 0;
  tiles_touched[i] = 0;
  depth_keys[i] = 0xFFFFFFFFu;

  // rows with any non-finite input are culled (as the reference does)
  const float3 p = make_float3(means3D[3 * i], means3D[3 * i + 1], means3D[3 * i + 2]);
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
    if (!ok) return;
    cov3d_from_scale_rot(s, q, Sg, R, qn, qnorm);
  }
  if (!ok) return;

  const float3 t = view_point(cam.view, p);
  if (!(t.z > NEAR_Z)) return;
  const float4 ph = proj_point(cam.proj, p);
  const float pw = 1.f / (ph.w + 1e-7f);
  const float2 m = make_float2(((ph.x * pw + 1.f) * cam.W - 1.f) * 0.5f, ((ph.y * pw + 1.f) * cam.H - 1.f) * 0.5f);
  if (!(finitef(m.x) && finitef(m.y))) return;

  const Cov2D cv = project_cov(cam, t, Sg);
  const float a = cv.a0 + DILATION, c = cv.c0 + DILATION, b = cv.b;
  const float det = a * c - b * b;
  if (!(det > 0.f) || !finitef(det)) return;
  const float idet = 1.f / det;
  const float4 co0 = make_float4(c * idet, -b * idet, a * idet, 0.f);
  if (!(finitef(co0.x) && finitef(co0.y) && finitef(co0.z))) return;
  float op = opacity;
  if (cam.antialiasing) {
    const float det0 = cv.a0 * cv.c0 - b * b;
    op = op * sqrtf(fmaxf(AA_MIN_RATIO, det0 / det));
  }
  const float mid = 0.5f * (a + c);
  const float disc = sqrtf(fmaxf(0.1f, mid * mid - det));
  const float radius = ceilf(3.f * sqrtf(fmaxf(mid + disc, mid - disc)));
  if (!finitef(radius)) return;
  int x0, y0, x1, y1;
  tile_rect(m, radius, cam.tiles_x, cam.tiles_y, x0, y0, x1, y1);
  if ((x1 - x0) * (y1 - y0) == 0) return;

  float3 col;
  if (colors_precomp != nullptr) {
    col = make_float3(colors_precomp[3 * i], colors_precomp[3 * i + 1], colors_precomp[3 * i + 2]);
    if (!(finitef(col.x) && finitef(col.y) && finitef(col.z))) return;
  } else {
    const float* sh = shs + (size_t)i * M * 3;
    bool shok = true;
    for (int k = 0; k < M * 3; k++) shok = shok && finitef(sh[k]);
    if (!shok) return;
    float3 d = make_float3(p.x - cam.campos[0], p.y - cam.campos[1], p.z - cam.campos[2]);
    const float inv = 1.f / fmaxf(sqrtf(d.x * d.x + d.y * d.y + d.z * d.z), 1e-12f);
    d.x *= inv;
    d.y *= inv;
    d.z *= inv;
    float bs[16];
    sh_basis(deg, d.x, d.y, d.z, bs);
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
  }

  const float4 co = make_float4(co0.x, co0.y, co0.z, op);
  const int rad = (int)radius;
  radii[i] = rad;
  xy[i] = m;
  conic_op[i] = co;
  rgbd[i] = make_float4(col.x, col.y, col.z, 1.f / t.z);
  depth_keys[i] = __float_as_uint(t.z);
  tiles_touched[i] = tile_pass(m, co, rad, cam.tiles_x, cam.tiles_y, nullptr, nullptr, i, 0);
}

void launch_preprocess_fwd(int P, int deg, int M, const float* means3D, const float* scales,
                           const float* rotations, const float* opacities, const float* shs,
                           const float* colors_precomp, const float* cov3D_precomp, const Cam& cam, int* radii,
                           float2* xy, float4* conic_op, float4* rgbd, uint32_t* depth_keys, int* tiles_touched,
                           cudaStream_t stream) {
  if (P == 0) return;
  preprocess_fwd_kernel<<<(P + 255) / 256, 256, 0, stream>>>(P, deg, M, means3D, scales, rotations, opacities, shs,
                                                             colors_precomp, cov3D_precomp, cam, radii, xy,
                                                             conic_op, rgbd, depth_keys, tiles_touched);
}

__global__ void gather_counts_kernel(int P, const int* order, const int* tiles_touched, int* counts_sorted) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < P) counts_sorted[i] = tiles_touched[order[i]];
}

void launch_gather_counts(int P, const int* order, const int* tiles_touched, int* counts_sorted,
                          cudaStream_t stream) {
  if (P == 0) return;
  gather_counts_kernel<<<(P + 255) / 256, 256, 0, stream>>>(P, order, tiles_touched, counts_sorted);
}

__global__ void emit_kernel(int P, const int* order, const int* offsets, const int* radii, const float2* xy,
                            const float4* conic_op, int tiles_x, int tiles_y, uint32_t* keys, int* vals) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= P) return;
  const int start = i == 0 ? 0 : offsets[i - 1];
  const int cap = offsets[i] - start;
  if (cap <= 0) return;
  const int g = order[i];
  const int n = tile_pass(xy[g], conic_op[g], radii[g], tiles_x, tiles_y, keys + start, vals + start, g, cap);
  // Safety net (never expected): pad with a sentinel tile id that the range pass ignores.
  for (int k = n; k < cap; k++) {
    keys[start + k] = (uint32_t)(tiles_x * tiles_y);
    vals[start + k] = g;
  }
}

void launch_emit(int P, const int* order, const int* offsets, const int* radii, const float2* xy,
                 const float4* conic_op, int tiles_x, int tiles_y, uint32_t* keys, int* vals, cudaStream_t stream) {
  if (P == 0) return;
  emit_kernel<<<(P + 255) / 256, 256, 0, stream>>>(P, order, offsets, radii, xy, conic_op, tiles_x, tiles_y, keys,
                                                   vals);
}

__global__ void identify_ranges_kernel(int R, const uint32_t* keys, int num_tiles, int2* ranges) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= R) return;
  const uint32_t k = keys[i];
  if (k >= (uint32_t)num_tiles) return;
  if (i == 0 || keys[i - 1] != k) ranges[k].x = i;
  if (i == R - 1 || keys[i + 1] != k) ranges[k].y = i + 1;
}

void launch_identify_ranges(int R, const uint32_t* keys, int num_tiles, int2* ranges, cudaStream_t stream) {
  if (R == 0) return;
  identify_ranges_kernel<<<(R + 255) / 256, 256, 0, stream>>>(R, keys, num_tiles, ranges);
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
