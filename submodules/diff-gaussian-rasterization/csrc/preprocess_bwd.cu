// Backward of the per-Gaussian preprocessing: from screen-space gradients (2D mean, conic, effective
// opacity, colour, inverse depth) to every input. Recomputes the forward geometry instead of storing it.
#include "geometry.cuh"
#include "kernels.h"

namespace dgr {

// Gradients of one visible Gaussian i (rank rk). sh / dsh point to its SH row and its gradient row.
__device__ __forceinline__ void preprocess_bwd_one(
    int i, int rk, int deg, int M, int n2, const float* __restrict__ means3D, const float* __restrict__ scales,
    const float* __restrict__ rotations, const float* __restrict__ opacities, const float* sh,
    const float* __restrict__ colors_precomp, const float* __restrict__ cov3D_precomp, const Cam& cam,
    const float* __restrict__ grad, float* dL_dmeans3D, float* dL_dmeans2D, float* dL_dopacity, float* dsh,
    float* dL_dcolors, float* dL_dscales, float* dL_drotations, float* dL_dcov3D) {
  const float* gr = grad + (size_t)rk * GRAD_STRIDE;
  const float g_mx = gr[0], g_my = gr[1], g_ca = gr[2], g_cb = gr[3], g_cc = gr[4], g_op = gr[5];
  const float g_r = gr[6], g_g = gr[7], g_b = gr[8], g_invz = gr[9];
  const float* V = cam.view;
  const float* Pm = cam.proj;

  const float3 p = make_float3(means3D[3 * i], means3D[3 * i + 1], means3D[3 * i + 2]);
  float dp[3] = {0.f, 0.f, 0.f};

  // ---- 2D mean: pixel = ((ndc + 1) S - 1) / 2, ndc = p_hom.xy / (p_hom.w + 1e-7)
  const float g_nx = g_mx * 0.5f * cam.W, g_ny = g_my * 0.5f * cam.H;
  dL_dmeans2D[n2 * i] = g_nx;
  dL_dmeans2D[n2 * i + 1] = g_ny;
  if (n2 == 3) dL_dmeans2D[3 * i + 2] = 0.f;
  {
    const float4 ph = proj_point(Pm, p);
    const float w = 1.f / (ph.w + 1e-7f);
    const float w2 = w * w;
#pragma unroll
    for (int k = 0; k < 3; k++)
      dp[k] += g_nx * (Pm[k * 4 + 0] * w - ph.x * w2 * Pm[k * 4 + 3]) +
               g_ny * (Pm[k * 4 + 1] * w - ph.y * w2 * Pm[k * 4 + 3]);
  }

  // ---- 3D covariance
  float Sg[6], R[9], s[3], qn[4], qnorm = 0.f;
  if (cov3D_precomp != nullptr) {
#pragma unroll
    for (int k = 0; k < 6; k++) Sg[k] = cov3D_precomp[6 * i + k];
  } else {
    float q[4];
#pragma unroll
    for (int k = 0; k < 3; k++) s[k] = scales[3 * i + k] * cam.scale_modifier;
#pragma unroll
    for (int k = 0; k < 4; k++) q[k] = rotations[4 * i + k];
    cov3d_from_scale_rot(s, q, Sg, R, qn, qnorm);
  }

  // ---- 2D covariance, conic, opacity
  const float3 t = view_point(V, p);
  const Cov2D cv = project_cov(cam, t, Sg);
  const float a = cv.a0 + DILATION, c = cv.c0 + DILATION, b = cv.b;
  const float det = a * c - b * b;
  const float idet = 1.f / det, idet2 = idet * idet;
  const float opacity = opacities[i];
  float f = 1.f;
  float g_det0 = 0.f, g_detaa = 0.f;
  if (cam.antialiasing) {
    const float det0 = cv.a0 * cv.c0 - b * b;
    const float ratio = det0 / det;
    f = sqrtf(fmaxf(AA_MIN_RATIO, ratio));
    if (ratio >= AA_MIN_RATIO) {
      const float g_ratio = g_op * opacity * 0.5f / f;
      g_det0 = g_ratio * idet;
      g_detaa = -g_ratio * det0 * idet2;
    }
  }
  dL_dopacity[i] = g_op * f;
  // conic = (c, -b, a) / det
  const float g_det = -(g_ca * c - g_cb * b + g_cc * a) * idet2 + g_detaa;
  float dA = g_cc * idet + g_det * c + g_det0 * cv.c0;
  float dC = g_ca * idet + g_det * a + g_det0 * cv.a0;
  float dB = -g_cb * idet - 2.f * b * (g_det + g_det0);

  // ---- cov2D = Tm Sigma Tm^T with G2 = [[dA, dB/2], [dB/2, dC]]
  const float* T0 = cv.Tm;
  const float* T1 = cv.Tm + 3;
  // dL/dSigma = Tm^T G2 Tm (symmetric): entries (k, l) = dA T0k T0l + dB/2 (T0k T1l + T1k T0l) + dC T1k T1l
  float gS[9];
#pragma unroll
  for (int k = 0; k < 3; k++)
#pragma unroll
    for (int l = 0; l < 3; l++)
      gS[k * 3 + l] = dA * T0[k] * T0[l] + 0.5f * dB * (T0[k] * T1[l] + T1[k] * T0[l]) + dC * T1[k] * T1[l];
  // dL/dTm = 2 G2 Tm Sigma
  float SgF[9] = {Sg[0], Sg[1], Sg[2], Sg[1], Sg[3], Sg[4], Sg[2], Sg[4], Sg[5]};
  float TS0[3], TS1[3];
#pragma unroll
  for (int l = 0; l < 3; l++) {
    TS0[l] = T0[0] * SgF[l] + T0[1] * SgF[3 + l] + T0[2] * SgF[6 + l];
    TS1[l] = T1[0] * SgF[l] + T1[1] * SgF[3 + l] + T1[2] * SgF[6 + l];
  }
  float gT0[3], gT1[3];
#pragma unroll
  for (int l = 0; l < 3; l++) {
    gT0[l] = 2.f * (dA * TS0[l] + 0.5f * dB * TS1[l]);
    gT1[l] = 2.f * (0.5f * dB * TS0[l] + dC * TS1[l]);
  }
  // Tm = J Wr, Wr[j][k] = V[k*4+j]  ->  dL/dJ[r][j] = sum_k gT[r][k] Wr[j][k]
  const float gJ00 = gT0[0] * V[0] + gT0[1] * V[4] + gT0[2] * V[8];
  const float gJ02 = gT0[0] * V[2] + gT0[1] * V[6] + gT0[2] * V[10];
  const float gJ11 = gT1[0] * V[1] + gT1[1] * V[5] + gT1[2] * V[9];
  const float gJ12 = gT1[0] * V[2] + gT1[1] * V[6] + gT1[2] * V[10];
  const float fx = cam.focal_x, fy = cam.focal_y;
  const float iz = 1.f / t.z, iz2 = iz * iz, iz3 = iz2 * iz;
  const float g_txc = -fx * iz2 * gJ02;  // w.r.t. the clamped tx
  const float g_tyc = -fy * iz2 * gJ12;
  float g_tz = -fx * iz2 * gJ00 - fy * iz2 * gJ11 + 2.f * fx * cv.tx * iz3 * gJ02 + 2.f * fy * cv.ty * iz3 * gJ12;
  float g_tx = 0.f, g_ty = 0.f;
  const float limx = 1.3f * cam.tanfovx, limy = 1.3f * cam.tanfovy;
  if (cv.clx == 0) g_tx = g_txc; else g_tz += g_txc * (cv.clx > 0 ? limx : -limx);
  if (cv.cly == 0) g_ty = g_tyc; else g_tz += g_tyc * (cv.cly > 0 ? limy : -limy);
  g_tz -= g_invz * iz2;  // inverse depth 1/z
#pragma unroll
  for (int k = 0; k < 3; k++) dp[k] += V[k * 4 + 0] * g_tx + V[k * 4 + 1] * g_ty + V[k * 4 + 2] * g_tz;

  // ---- Sigma -> scales / rotations or cov3D_precomp
  if (cov3D_precomp != nullptr) {
    dL_dcov3D[6 * i + 0] = gS[0];
    dL_dcov3D[6 * i + 1] = gS[1] + gS[3];
    dL_dcov3D[6 * i + 2] = gS[2] + gS[6];
    dL_dcov3D[6 * i + 3] = gS[4];
    dL_dcov3D[6 * i + 4] = gS[5] + gS[7];
    dL_dcov3D[6 * i + 5] = gS[8];
  } else {
    // Sigma = Mm Mm^T, Mm = R diag(s): dL/dMm = 2 gS Mm
    float Mm[9];
#pragma unroll
    for (int r = 0; r < 3; r++)
#pragma unroll
      for (int j = 0; j < 3; j++) Mm[r * 3 + j] = R[r * 3 + j] * s[j];
    float gM[9];
#pragma unroll
    for (int r = 0; r < 3; r++)
#pragma unroll
      for (int j = 0; j < 3; j++)
        gM[r * 3 + j] = 2.f * (gS[r * 3 + 0] * Mm[0 * 3 + j] + gS[r * 3 + 1] * Mm[1 * 3 + j] + gS[r * 3 + 2] * Mm[2 * 3 + j]);
    float gR[9];
#pragma unroll
    for (int j = 0; j < 3; j++) {
      const float gs = gM[0 * 3 + j] * R[0 * 3 + j] + gM[1 * 3 + j] * R[1 * 3 + j] + gM[2 * 3 + j] * R[2 * 3 + j];
      dL_dscales[3 * i + j] = gs * cam.scale_modifier;
#pragma unroll
      for (int r = 0; r < 3; r++) gR[r * 3 + j] = gM[r * 3 + j] * s[j];
    }
    const float w = qn[0], x = qn[1], y = qn[2], z = qn[3];
    float gq[4];
    gq[0] = 2.f * (-z * gR[1] + y * gR[2] + z * gR[3] - x * gR[5] - y * gR[6] + x * gR[7]);
    gq[1] = 2.f * (y * gR[1] + z * gR[2] + y * gR[3] - w * gR[5] + z * gR[6] + w * gR[7]) -
            4.f * x * (gR[4] + gR[8]);
    gq[2] = 2.f * (x * gR[1] + w * gR[2] + x * gR[3] + z * gR[5] - w * gR[6] + z * gR[7]) -
            4.f * y * (gR[0] + gR[8]);
    gq[3] = 2.f * (-w * gR[1] + x * gR[2] + w * gR[3] + y * gR[5] + x * gR[6] + y * gR[7]) -
            4.f * z * (gR[0] + gR[4]);
    // qn = q / max(|q|, 1e-12)
    if (qnorm > 1e-12f) {
      const float dot = gq[0] * w + gq[1] * x + gq[2] * y + gq[3] * z;
      const float inv = 1.f / qnorm;
#pragma unroll
      for (int k = 0; k < 4; k++) dL_drotations[4 * i + k] = (gq[k] - qn[k] * dot) * inv;
    } else {
#pragma unroll
      for (int k = 0; k < 4; k++) dL_drotations[4 * i + k] = gq[k] * 1e12f;
    }
  }

  // ---- colour
  if (colors_precomp != nullptr) {
    dL_dcolors[3 * i] = g_r;
    dL_dcolors[3 * i + 1] = g_g;
    dL_dcolors[3 * i + 2] = g_b;
  } else {
    float3 v = make_float3(p.x - cam.campos[0], p.y - cam.campos[1], p.z - cam.campos[2]);
    const float len = sqrtf(v.x * v.x + v.y * v.y + v.z * v.z);
    const float inv = 1.f / fmaxf(len, 1e-12f);
    const float x = v.x * inv, y = v.y * inv, z = v.z * inv;
    float bs[16];
    sh_basis(deg, x, y, z, bs);
    const int K = (deg + 1) * (deg + 1);
    float raw[3] = {0.5f, 0.5f, 0.5f};
#pragma unroll
    for (int k = 0; k < 16; k++) {
      if (k < K) {
        raw[0] += bs[k] * sh[3 * k];
        raw[1] += bs[k] * sh[3 * k + 1];
        raw[2] += bs[k] * sh[3 * k + 2];
      }
    }
    // clamp_min(., 0): no gradient where the raw colour is below zero
    float gc[3];
    gc[0] = raw[0] < 0.f ? 0.f : g_r;
    gc[1] = raw[1] < 0.f ? 0.f : g_g;
    gc[2] = raw[2] < 0.f ? 0.f : g_b;
    if (deg > 0) {
      float bx[16], by[16], bz[16];
      sh_basis_grad(deg, x, y, z, bx, by, bz);
      float gdx = 0.f, gdy = 0.f, gdz = 0.f;
#pragma unroll
      for (int k = 1; k < 16; k++) {
        if (k >= K) break;
        const float cdot = sh[3 * k] * gc[0] + sh[3 * k + 1] * gc[1] + sh[3 * k + 2] * gc[2];
        gdx += bx[k] * cdot;
        gdy += by[k] * cdot;
        gdz += bz[k] * cdot;
      }
      // dir = v / max(|v|, 1e-12)
      if (len > 1e-12f) {
        const float dot = gdx * x + gdy * y + gdz * z;
        dp[0] += (gdx - x * dot) * inv;
        dp[1] += (gdy - y * dot) * inv;
        dp[2] += (gdz - z * dot) * inv;
      }
    }
    // written last: in the staged path dsh aliases sh
#pragma unroll
    for (int k = 0; k < 16; k++) {
      if (k < K) {
        dsh[3 * k] = bs[k] * gc[0];
        dsh[3 * k + 1] = bs[k] * gc[1];
        dsh[3 * k + 2] = bs[k] * gc[2];
      }
    }
    for (int k = K; k < M; k++) dsh[3 * k] = dsh[3 * k + 1] = dsh[3 * k + 2] = 0.f;
  }
#pragma unroll
  for (int k = 0; k < 3; k++) dL_dmeans3D[3 * i + k] = dp[k];
}

__global__ void __launch_bounds__(PRE_BLOCK) preprocess_bwd_kernel(
    int P, int deg, int M, bool sh_fast, int n2, const float* __restrict__ means3D, const float* __restrict__ scales,
    const float* __restrict__ rotations, const float* __restrict__ opacities, const float* __restrict__ shs,
    const float* __restrict__ shs_rest, const float* __restrict__ colors_precomp,
    const float* __restrict__ cov3D_precomp, const Cam cam, const int* __restrict__ rank,
    const float* __restrict__ grad, float* dL_dmeans3D, float* dL_dmeans2D, float* dL_dopacity, float* dL_dshs,
    float* dL_dshs_rest, float* dL_dcolors, float* dL_dscales, float* dL_drotations, float* dL_dcov3D) {
  __shared__ float s_sh[PRE_BLOCK / 32][32 * SH_PAD];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int rk = i < P ? rank[i] : -1;
  const bool vis = rk >= 0;
  // SH rows: staged through shared memory by the whole warp (coalesced), or read in place
  const float* sh = nullptr;
  float* dsh = nullptr;
  if (shs != nullptr) {
    if (sh_fast) {
      warp_load_sh(shs, shs_rest, i - lane, P, vis, s_sh[warp], lane);  // (culled rows: not read)
      __syncwarp();
      sh = s_sh[warp] + lane * SH_PAD;
      dsh = s_sh[warp] + lane * SH_PAD;  // overwritten in place once read
    } else if (i < P) {
      sh = shs + (size_t)i * M * 3;
      dsh = dL_dshs + (size_t)i * M * 3;
    }
  }
  if (vis) {
    preprocess_bwd_one(i, rk, deg, M, n2, means3D, scales, rotations, opacities, sh, colors_precomp, cov3D_precomp,
                       cam, grad, dL_dmeans3D, dL_dmeans2D, dL_dopacity, dsh, dL_dcolors, dL_dscales, dL_drotations,
                       dL_dcov3D);
  } else if (i < P) {
#pragma unroll
    for (int k = 0; k < 3; k++) dL_dmeans3D[3 * i + k] = 0.f;
    for (int k = 0; k < n2; k++) dL_dmeans2D[n2 * i + k] = 0.f;
    dL_dopacity[i] = 0.f;
    if (dsh != nullptr)
      for (int k = 0; k < M * 3; k++) dsh[k] = 0.f;
    if (dL_dcolors != nullptr)
      for (int k = 0; k < 3; k++) dL_dcolors[3 * i + k] = 0.f;
    if (dL_dscales != nullptr) {
      for (int k = 0; k < 3; k++) dL_dscales[3 * i + k] = 0.f;
      for (int k = 0; k < 4; k++) dL_drotations[4 * i + k] = 0.f;
    }
    if (dL_dcov3D != nullptr)
      for (int k = 0; k < 6; k++) dL_dcov3D[6 * i + k] = 0.f;
  } else if (sh_fast && dsh != nullptr) {
    for (int k = 0; k < 48; k++) dsh[k] = 0.f;
  }
  if (sh_fast && shs != nullptr) {
    __syncwarp();
    warp_store_sh(dL_dshs, dL_dshs_rest, i - lane, P, s_sh[warp], lane);
  }
}

void launch_preprocess_bwd(int P, int deg, int M, bool sh_fast, int n2, const float* means3D, const float* scales,
                           const float* rotations, const float* opacities, const float* shs,
                           const float* shs_rest, const float* colors_precomp, const float* cov3D_precomp,
                           const Cam& cam, const int* rank, const float* grad, float* dL_dmeans3D,
                           float* dL_dmeans2D, float* dL_dopacity, float* dL_dshs, float* dL_dshs_rest,
                           float* dL_dcolors, float* dL_dscales, float* dL_drotations, float* dL_dcov3D,
                           cudaStream_t stream) {
  if (P == 0) return;
  preprocess_bwd_kernel<<<(P + PRE_BLOCK - 1) / PRE_BLOCK, PRE_BLOCK, 0, stream>>>(
      P, deg, M, sh_fast, n2, means3D, scales, rotations, opacities, shs, shs_rest, colors_precomp, cov3D_precomp,
      cam, rank, grad, dL_dmeans3D, dL_dmeans2D, dL_dopacity, dL_dshs, dL_dshs_rest, dL_dcolors, dL_dscales,
      dL_drotations, dL_dcov3D);
}

}  // namespace dgr
