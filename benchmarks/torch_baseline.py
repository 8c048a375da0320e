"""The PyTorch baseline: the same SAEs, weighted loss and optimiser step, written as a PyTorch user
would (eager modules; `torch.compile` optional).

    from torch_baseline import TorchSAE, TorchTrainer
    sae = TorchSAE.from_params("topk", params, k=32)          # params: numpy dict, SAELens names
    trainer = TorchTrainer(sae, lr=1e-3, steps=1000, warmup_steps=100, grad_clip=1.0)
    metrics = trainer.step(x, gamma)                           # one Adam step

Semantics match wsae_jax exactly (see tests/test_torch_parity.py):
  tied  z = ReLU(x W_enc), x̂ = z W_encᵀ; loss = mean_b Σ_i γ_i² (x − x̂)_i²
  relu  z = ReLU(x W_enc + b_enc), x̂ = z W_dec + b_dec; + λ mean_b Σ_j z_j ‖W_dec[j]‖
  topk  z = TopK(ReLU((x − b_dec) W_enc + b_enc)), unit-norm decoder rows (gradient parallel to
        the rows removed before Adam, rows renormalised after), + AuxK on dead latents.
  jumprelu  z = pre·1[pre > θ], pre = x W_enc + b_enc; + λ mean_b Σ_j 1[pre_j > θ_j]; the
        straight-through estimators of SAELens 6 (rectangle kernel of bandwidth ε, gradient to θ
        only for the L0 term); θ clamped to >= 0 after each step.
  batchtopk  the ⌊k·B⌋ largest ReLU'd pre-activations of the batch, pre = (x − b_dec) W_enc +
        b_enc; unit-norm decoder rows and AuxK as topk; θ ← (1 − r)θ + r·min(selected > 0).
  matryoshka_batchtopk  batchtopk, plus the reconstruction errors of each prefix z[:, :w] W_dec[:w]
        + b_dec for the inner widths w of `matryoshka_widths`.
  gated  z = 1[π_gate > 0]·ReLU(π_mag), π_gate = (x − b_dec) W_enc + b_gate, π_mag = (x − b_dec)
        (W_enc·exp(r_mag)) + b_mag; + λ mean_b Σ_j ReLU(π_gate)_j ‖W_dec[j]‖ + the (weighted)
        error of ReLU(π_gate) decoded by a detached W_dec, b_dec.
Adam (β1 0.9, β2 0.999, ε 1e-8), linear warm-up, global-norm gradient clipping.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def _rectangle(u):
  return ((u > -0.5) & (u < 0.5)).to(u)


class _JumpReLU(torch.autograd.Function):
  """`x·1[x > θ]`; gradient `1[x > θ]` to x and `−(θ/ε) K((x − θ)/ε)` to θ."""

  @staticmethod
  def forward(ctx, x, threshold, bandwidth):
    ctx.save_for_backward(x, threshold)
    ctx.bandwidth = bandwidth
    return x * (x > threshold)

  @staticmethod
  def backward(ctx, g):
    x, threshold = ctx.saved_tensors
    ste = (threshold / ctx.bandwidth) * _rectangle((x - threshold) / ctx.bandwidth) * g
    return (x > threshold) * g, -ste.sum(0), None


class _Step(torch.autograd.Function):
  """`1[x > θ]`; gradient `−(1/ε) K((x − θ)/ε)` to θ only."""

  @staticmethod
  def forward(ctx, x, threshold, bandwidth):
    ctx.save_for_backward(x, threshold)
    ctx.bandwidth = bandwidth
    return (x > threshold).to(x)

  @staticmethod
  def backward(ctx, g):
    x, threshold = ctx.saved_tensors
    ste = (1.0 / ctx.bandwidth) * _rectangle((x - threshold) / ctx.bandwidth) * g
    return torch.zeros_like(x), -ste.sum(0), None


class TorchSAE(nn.Module):
  def __init__(
    self,
    arch: str,
    d_in: int,
    d_sae: int,
    *,
    k: float | None = None,
    l1_coefficient: float = 1e-3,
    aux_k: int | None = None,
    aux_coefficient: float = 1 / 32,
    dead_after_tokens: int = 10_000_000,
    l0_coefficient: float = 1e-2,
    bandwidth: float = 0.05,
    threshold_lr: float = 0.01,
    matryoshka_widths: tuple[int, ...] = (),
  ):
    super().__init__()
    self.arch, self.d_in, self.d_sae, self.k = arch, d_in, d_sae, k
    self.l1_coefficient = l1_coefficient
    self.l0_coefficient, self.bandwidth, self.threshold_lr = l0_coefficient, bandwidth, threshold_lr
    self.aux_k = aux_k if aux_k is not None else max(1, min(d_in // 2, d_sae))
    self.aux_coefficient = aux_coefficient
    self.dead_after_tokens = dead_after_tokens
    self.widths = tuple(matryoshka_widths) or (d_sae,)
    self.batch_selection = arch in ("batchtopk", "matryoshka_batchtopk")
    self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
    if arch != "tied":
      self.W_dec = nn.Parameter(torch.empty(d_sae, d_in))
      self.b_dec = nn.Parameter(torch.zeros(d_in))
    if arch == "gated":
      self.b_gate = nn.Parameter(torch.zeros(d_sae))
      self.b_mag = nn.Parameter(torch.zeros(d_sae))
      self.r_mag = nn.Parameter(torch.zeros(d_sae))
    elif arch != "tied":
      self.b_enc = nn.Parameter(torch.zeros(d_sae))
    if arch == "jumprelu":
      self.threshold = nn.Parameter(torch.zeros(d_sae))
    if self.batch_selection:  # not trained by the gradient: a buffer
      self.register_buffer("threshold", torch.zeros(()))
    self.register_buffer("tokens_since_fired", torch.zeros(d_sae, dtype=torch.long))

  @classmethod
  def from_params(cls, arch: str, params: dict, **kw) -> "TorchSAE":
    d_in, d_sae = np.shape(params["W_enc"])
    sae = cls(arch, d_in, d_sae, **kw)
    with torch.no_grad():
      for name, value in params.items():
        getattr(sae, name).copy_(torch.from_numpy(np.array(value, np.float32)))
    return sae

  def params_numpy(self) -> dict:
    out = {n: p.detach().cpu().numpy().copy() for n, p in self.named_parameters()}
    if self.batch_selection:
      out["threshold"] = self.threshold.cpu().numpy().copy()
    return out

  def decoder(self):
    return self.W_enc.T if self.arch == "tied" else self.W_dec

  def pre(self, x):
    if self.arch == "tied":
      return x @ self.W_enc
    if self.arch == "gated":
      return (x - self.b_dec) @ (self.W_enc * self.r_mag.exp()) + self.b_mag
    if self.arch in ("topk", "batchtopk", "matryoshka_batchtopk"):
      return (x - self.b_dec) @ self.W_enc + self.b_enc
    return x @ self.W_enc + self.b_enc

  @staticmethod
  def topk(pre, k):
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))

  @staticmethod
  def batch_topk(pre, k):
    flat = torch.relu(pre).flatten()
    vals, idx = flat.topk(int(k * pre.shape[0]))
    return torch.zeros_like(flat).scatter(-1, idx, vals).reshape(pre.shape)

  def forward(self, x):
    pre = self.pre(x)
    if self.arch == "topk":
      z = self.topk(pre, self.k)
    elif self.batch_selection:
      z = self.batch_topk(pre, self.k)
    elif self.arch == "gated":
      z = (self.gate_pre(x) > 0) * torch.relu(pre)
    elif self.arch == "jumprelu":
      z = _JumpReLU.apply(pre, self.threshold, self.bandwidth)
    else:
      z = torch.relu(pre)
    x_hat = z @ self.decoder()
    if self.arch != "tied":
      x_hat = x_hat + self.b_dec
    return pre, z, x_hat

  def gate_pre(self, x):
    return (x - self.b_dec) @ self.W_enc + self.b_gate

  def loss(self, x, gamma=None):
    pre, z, x_hat = self(x)
    g2 = 1.0 if gamma is None else gamma**2
    recon = ((x - x_hat) ** 2 * g2).sum(-1).mean()
    loss = recon
    for w in self.widths[:-1]:  # Matryoshka: each inner prefix reconstructs on its own
      x_w = z[:, :w] @ self.W_dec[:w] + self.b_dec
      loss = loss + ((x - x_w) ** 2 * g2).sum(-1).mean()
    if self.arch == "gated":
      gate = torch.relu(self.gate_pre(x))
      loss = loss + self.l1_coefficient * (gate @ self.W_dec.norm(dim=-1)).mean()
      x_gate = gate @ self.W_dec.detach() + self.b_dec.detach()
      loss = loss + ((x - x_gate) ** 2 * g2).sum(-1).mean()
    if self.arch == "relu":
      loss = loss + self.l1_coefficient * (z @ self.W_dec.norm(dim=-1)).mean()
    if self.arch == "jumprelu":
      l0 = _Step.apply(pre, self.threshold, self.bandwidth).sum(-1).mean()
      loss = loss + self.l0_coefficient * l0
    if self.arch == "topk" or self.batch_selection:
      dead = self.tokens_since_fired >= self.dead_after_tokens
      n_dead = int(dead.sum())
      if n_dead > 0:
        residual = (x - x_hat).detach()
        dead_pre = torch.where(dead, pre, torch.full_like(pre, -math.inf))
        z_aux = self.topk(dead_pre, self.aux_k)
        e_hat = z_aux @ self.W_dec
        aux = ((residual - e_hat) ** 2 * g2).sum(-1).mean() * min(n_dead / self.aux_k, 1.0)
        loss = loss + self.aux_coefficient * aux
    return loss, z


class TorchTrainer:
  """Adam with linear warm-up and the decoder handling of each architecture."""

  def __init__(
    self,
    sae: TorchSAE,
    *,
    lr: float,
    steps: int,
    warmup_steps: int = 0,
    grad_clip: float | None = 1.0,
    compile: bool = False,
  ):
    self.sae = sae
    self.grad_clip = grad_clip
    self.opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    w = max(warmup_steps, 1)
    self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda t: min(t / w, 1.0))
    self._loss = torch.compile(sae.loss) if compile else sae.loss

  def step(self, x: torch.Tensor, gamma: torch.Tensor | None = None) -> float:
    sae = self.sae
    self.opt.zero_grad(set_to_none=True)
    loss, z = self._loss(x, gamma)
    loss.backward()
    unit_decoder = sae.arch == "topk" or sae.batch_selection
    if unit_decoder:
      with torch.no_grad():
        u = sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        g = sae.W_dec.grad
        g -= (g * u).sum(-1, keepdim=True) * u
    if self.grad_clip is not None:
      torch.nn.utils.clip_grad_norm_(sae.parameters(), self.grad_clip)
    self.opt.step()
    self.sched.step()
    with torch.no_grad():
      if unit_decoder:
        sae.W_dec /= sae.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
      if sae.arch == "jumprelu":
        sae.threshold.clamp_(min=0.0)
      if sae.batch_selection and (z > 0).any():
        r = sae.threshold_lr
        sae.threshold.copy_((1 - r) * sae.threshold + r * z[z > 0].min())
      fired = (z > 0).any(0)
      sae.tokens_since_fired = torch.where(
        fired, torch.zeros_like(sae.tokens_since_fired), sae.tokens_since_fired + x.shape[0]
      )
    return float(loss.detach())
