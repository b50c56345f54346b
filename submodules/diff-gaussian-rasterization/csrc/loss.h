// Torch-facing entry points of the fused image loss (loss.cu; bound to Python in ext.cpp).
#pragma once
#include <torch/extension.h>

#include <vector>

namespace dgr {

// sum_k weights[k] [(1 - lambda) L1 + lambda (1 - SSIM)] of render [3, H, W] against 1 or 2 float32
// targets of its shape (11x11 Gaussian window, sigma 1.5, zero padding 'same', as
// utils/loss_utils.py::photometric_loss). Returns {loss (0-dim), stats [2, K] (the L1 means, then the SSIM
// means; empty unless with_stats), maps [2 + K, 3, H, W] for the backward (empty unless need_grad)}.
std::vector<torch::Tensor> fused_loss_forward(const torch::Tensor& render, const std::vector<torch::Tensor>& targets,
                                              const std::vector<double>& weights, double lambda_dssim,
                                              bool need_grad, bool with_stats);

// grad_loss (one value) x dloss/drender [3, H, W], from the forward's maps; the same targets, weights, lambda.
torch::Tensor fused_loss_backward(const torch::Tensor& grad_loss, const torch::Tensor& render,
                                  const std::vector<torch::Tensor>& targets, const std::vector<double>& weights,
                                  double lambda_dssim, const torch::Tensor& maps);

}  // namespace dgr
