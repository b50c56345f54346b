// Per-Gaussian geometry shared by the forward and the backward preprocessing kernels.
#pragma once
#include "common.cuh"

namespace dgr {

// p_view = [p, 1] @ view (view stored row-major, row-vector convention)
__device__ __forceinline__ float3 view_point(const float* V, float3 p) {
  return make_float3(p.x * V[0] + p.y * V[4] + p.z * V[8] + V[12], p.x * V[1] + p.y * V[5] + p.z * V[9] + V[13],
                     p.x * V[2] + p.y * V[6] + p.z * V[10] + V[14]);
}

__device__ __forceinline__ float4 proj_point(const float* Pm, float3 p) {
  return make_float4(p.x * Pm[0] + p.y * Pm[4] + p.z * Pm[8] + Pm[12], p.x * Pm[1] + p.y * Pm[5] + p.z * Pm[9] + Pm[13],
                     p.x * Pm[2] + p.y * Pm[6] + p.z * Pm[10] + Pm[14],
                     p.x * Pm[3] + p.y * Pm[7] + p.z * Pm[11] + Pm[15]);
}

// Sigma = (R S)(R S)^T, upper triangle (xx, xy, xz, yy, yz, zz). s = scale * modifier.
// Also returns R (row-major), the normalised quaternion and the quaternion's norm.
__device__ __forceinline__ void cov3d_from_scale_rot(const float s[3], const float q[4], float Sigma[6], float R[9],
                                                     float qn[4], float& qnorm) {
  qnorm = sqrtf(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
  const float inv = 1.f / fmaxf(qnorm, 1e-12f);
#pragma unroll
  for (int k = 0; k < 4; k++) qn[k] = q[k] * inv;
  quat_to_rot(qn[0], qn[1], qn[2], qn[3], R);
  float M[9];
#pragma unroll
  for (int i = 0; i < 3; i++)
#pragma unroll
    for (int j = 0; j < 3; j++) M[i * 3 + j] = R[i * 3 + j] * s[j];
  Sigma[0] = M[0] * M[0] + M[1] * M[1] + M[2] * M[2];
  Sigma[1] = M[0] * M[3] + M[1] * M[4] + M[2] * M[5];
  Sigma[2] = M[0] * M[6] + M[1] * M[7] + M[2] * M[8];
  Sigma[3] = M[3] * M[3] + M[4] * M[4] + M[5] * M[5];
  Sigma[4] = M[3] * M[6] + M[4] * M[7] + M[5] * M[8];
  Sigma[5] = M[6] * M[6] + M[7] * M[7] + M[8] * M[8];
}

// EWA projection of Sigma. Fills Tm = J Wr (2x3 row-major), the clamped tx, ty and clamp flags,
// and the undilated 2D covariance (a0, b, c0).
struct Cov2D {
  float Tm[6];
  float tx, ty;        // clamped view x, y used in J
  int clx, cly;        // 0: not clamped, -1 / +1: clamped at -lim / +lim
  float a0, b, c0;
};

__device__ __forceinline__ Cov2D project_cov(const Cam& cam, float3 t, const float Sg[6]) {
  Cov2D r;
  const float* V = cam.view;
  const float limx = 1.3f * cam.tanfovx, limy = 1.3f * cam.tanfovy;
  const float txz = t.x / t.z, tyz = t.y / t.z;
  r.clx = txz < -limx ? -1 : (txz > limx ? 1 : 0);
  r.cly = tyz < -limy ? -1 : (tyz > limy ? 1 : 0);
  r.tx = fminf(limx, fmaxf(-limx, txz)) * t.z;
  r.ty = fminf(limy, fmaxf(-limy, tyz)) * t.z;
  const float fx = cam.focal_x, fy = cam.focal_y;
  const float iz = 1.f / t.z, iz2 = iz * iz;
  const float J00 = fx * iz, J02 = -fx * r.tx * iz2, J11 = fy * iz, J12 = -fy * r.ty * iz2;
  // Wr[j][k] = V[k*4 + j]
#pragma unroll
  for (int k = 0; k < 3; k++) {
    r.Tm[k] = J00 * V[k * 4 + 0] + J02 * V[k * 4 + 2];
    r.Tm[3 + k] = J11 * V[k * 4 + 1] + J12 * V[k * 4 + 2];
  }
  const float* T0 = r.Tm;
  const float* T1 = r.Tm + 3;
  // S * T_row
  float s0[3], s1[3];
  s0[0] = Sg[0] * T0[0] + Sg[1] * T0[1] + Sg[2] * T0[2];
  s0[1] = Sg[1] * T0[0] + Sg[3] * T0[1] + Sg[4] * T0[2];
  s0[2] = Sg[2] * T0[0] + Sg[4] * T0[1] + Sg[5] * T0[2];
  s1[0] = Sg[0] * T1[0] + Sg[1] * T1[1] + Sg[2] * T1[2];
  s1[1] = Sg[1] * T1[0] + Sg[3] * T1[1] + Sg[4] * T1[2];
  s1[2] = Sg[2] * T1[0] + Sg[4] * T1[1] + Sg[5] * T1[2];
  r.a0 = T0[0] * s0[0] + T0[1] * s0[1] + T0[2] * s0[2];
  r.b = T0[0] * s1[0] + T0[1] * s1[1] + T0[2] * s1[2];
  r.c0 = T1[0] * s1[0] + T1[1] * s1[1] + T1[2] * s1[2];
  return r;
}

}  // namespace dgr
