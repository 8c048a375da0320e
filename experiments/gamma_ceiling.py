"""The ceiling: the best any per-dimension weighting Γ does for feature recovery (issue #23).

    python experiments/gamma_ceiling.py            # the full study (~30 min on 2 CPU cores)
    python experiments/gamma_ceiling.py --smoke    # a tiny grid in about a minute (CI runs it)
    python experiments/gamma_ceiling.py --plan gpu # n = 200 toy models, 20 seeds, d_sae ∈ {n, 4n}

An untied WSAE is a plain SAE trained on Γx_p, i.e. on the dictionary ΓW_p. A weighting can
only help by making that dictionary less coherent or by moving the sparsity budget between
dimensions; whether any diagonal Γ helps at all bounds what every proxy (variance, kurtosis, ...)
can do. This script searches for the best Γ and judges the proxies against it.

Γ* by search: CMA-ES (the `cma` package, Hansen's reference implementation) over log γ ∈ ℝ^{n_p}
(projected to mean zero; γ normalised to mean(γ²) = 1 as every weighting in the library). Each
generation's population is trained as one compiled sweep (`training.sweep.train_sweep`): for each
search seed and sparsity, the plain SAE (the anchor) and every candidate share initialisation and
batches. Fitness = mean over the search seeds of log(L_GT(candidate) / L_GT(anchor)) on held-out
data (corrected L_GT: decoder matching by signed cosine, latents in the features' units). The
search starts at the best of the proxies evaluated in generation 0, so it never starts below them.
Γ* is the search distribution's final mean (less over-fitted to the search seeds than the best
candidate seen; both are saved). It is a lower bound of the true ceiling, found within the budget.

Confirmation on fresh seeds (never searched on): per (seed, S) the plain SAE, Γ*(S), Γ* of the
other search sparsity (transfer), Var^α for α ∈ {−1, −0.5, 0.5, 1}, the library's estimators
(robust variance, kurtosis, zero-fraction; α = 1), the oracle γ = PR⁻¹ and the decoder γ (α = 1),
all paired. S = 0.99 is the control (Γ* there is Γ*(0.9)).

SAEs: Top-k with the library's recipe (AuxK after 5% of the run, b_dec at the geometric median),
k = ⌈(1 − S)·n⌉ for every arm (equal L0 by construction), d_sae = n. The tied theory SAE gets the
same confirmation arms with Γ* as searched for Top-k (`--add-tied JSON`: no new search; it has no
sparsity setting, so its arms are at equal pressure by construction). ReLU + L1 (`--add-relu
JSON`, Γ* likewise from the saved search): every arm trains at each λ of `RELU_L1`, and each arm is
read at its own λ, the one whose median L0 over the seeds is nearest (in log) the Top-k arms' k,
i.e. at matched L0. Both are exploratory (Benjamini–Hochberg within each arm).

Geometries (n_p = 20):
  triangles    6 planes of triangles + 8 monosemantic dimensions (n = 26): the control, where
               a γ constant on each block cannot change the closed form.
  rotated-s0   the triangles' W_p rotated by a random orthogonal matrix (every dimension mixes).
  rotated-s1   the same with its rows scaled by exp(σ·g), g ~ N(0, 1), σ = 1: the known answer
               γ = exp(−σ·g) (the "undo" arm) maps it back to rotated-s0.
  hub          18 triangle features + 4 monosemantic ones on 16 dimensions, and every feature also
               loading 0.3–0.5 on one of 4 shared "hub" dimensions (columns renormalised);
               monosemantic features fire 2.5× as often as polysemantic ones.
  toy-imp      a trained Elhage toy model, n = 40, importance 0.9^i, per-feature firing rates
               log-uniform over a 9× range (mean 1), unit columns.
  toy-imp-raw  the same toy model with its column norms kept (important features larger; in
               the gpu plan only: the CPU budget holds five geometries).

Primary readings, fixed before the numbers (one per (geometry, S) with S ∈ {0.7, 0.9}): the
median paired relative change in held-out L_GT, Γ* against the plain SAE, over the fresh seeds,
with its order-statistic 95% interval; a one-sided exact sign test, Holm across the primary
readings. "Γ helps by ≥ 10%" there: Holm-adjusted p < 0.05 and median change ≤ −10%, with the x_p
MSE non-inferior (median relative change < +10%, one-sided sign test). Everything else (proxies,
S = 0.99, transfer) is exploratory, Benjamini–Hochberg within its family. The fraction of the
ceiling a proxy captures: its median change over Γ*'s, where Γ*'s is significant.

The theory as a predictor: per geometry and weighting, the closed form of the tied SAE on the
dictionary ΓW_p (columns normalised; recovered features mapped back to their units), and the mean
squared coherence of ΓW_p, each against the measured change.

Writes gamma_ceiling.json, gamma_ceiling_gamma.png (Γ* per dimension beside variance and
participation ratio), gamma_ceiling_effects.png (every arm's change with its interval, and the
search's progress), and the block between the `gamma_ceiling:begin/end` markers of RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import pathlib
import sys
import time
import warnings

import cma
import jax
import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import reproduce  # noqa: E402  (shared with the other studies: machine, figures, RESULTS.md blocks)

import wsae_jax as w  # noqa: E402
from wsae_jax.data import problems
from wsae_jax.evaluation import scoring, stats
from wsae_jax.training import gamma as wl
from wsae_jax.training import sweep

HERE = pathlib.Path(__file__).parent
OUT = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"
BEGIN, END = "<!-- gamma_ceiling:begin -->", "<!-- gamma_ceiling:end -->"
HELPS = 0.10  # "Γ helps": median relative L_GT change at or below −10%
MSE_MARGIN = 0.10  # "at equal reconstruction": median relative x_p MSE change below +10%
PROXIES = ("var-1", "var-0.5", "var0.5", "var1", "robust1", "kurt1", "zero1", "oracle")
ESTIMATORS = {"robust1": "robust-variance", "kurt1": "kurtosis", "zero1": "zero-fraction"}


@dataclasses.dataclass(frozen=True)
class Plan:
  """The grid and the budget of one run."""

  geometries: tuple[str, ...]
  search_sparsities: tuple[float, ...]
  control_sparsity: float
  search_seeds: tuple[int, ...]
  confirm_seeds: tuple[int, ...]
  popsize: int  # 1 + popsize must be a multiple of 4 (a sweep chunk reads one stream)
  generations: int
  sigma0: float
  d_sae_factors: tuple[int, ...]
  train: w.TrainConfig
  eval_samples: int
  toy_n: int
  toy_steps: int
  n_p: int = 20


_TRAIN = w.TrainConfig(
  steps=1500,
  batch_size=256,
  learning_rate=3e-3,
  warmup_steps=100,
  decay_fraction=0.2,
  log_every=200,
)
FULL = Plan(
  geometries=("triangles", "rotated-s0", "rotated-s1", "hub", "toy-imp"),
  search_sparsities=(0.7, 0.9),
  control_sparsity=0.99,
  search_seeds=(0, 1),
  confirm_seeds=tuple(range(100, 110)),
  popsize=11,
  generations=12,
  sigma0=0.5,
  d_sae_factors=(1,),
  train=_TRAIN,
  eval_samples=4096,
  toy_n=40,
  toy_steps=3000,
)
SMOKE = Plan(
  geometries=("rotated-s1", "hub"),
  search_sparsities=(0.7, 0.9),
  control_sparsity=0.99,
  search_seeds=(0, 1),
  confirm_seeds=(100, 101, 102),
  popsize=3,
  generations=2,
  sigma0=0.5,
  d_sae_factors=(1,),
  train=w.TrainConfig(steps=40, batch_size=64, learning_rate=3e-3, warmup_steps=5, log_every=20),
  eval_samples=512,
  toy_n=40,
  toy_steps=200,
)
GPU = dataclasses.replace(
  FULL,
  geometries=("toy-imp", "toy-imp-raw"),
  confirm_seeds=tuple(range(100, 120)),
  d_sae_factors=(1, 4),
  toy_n=200,
  generations=30,
  popsize=15,
)
PLANS = {"full": FULL, "smoke": SMOKE, "gpu": GPU}


# -- geometries ----------------------------------------------------------------------------------


def _haar(n: int, rng) -> np.ndarray:
  q, r = np.linalg.qr(rng.normal(size=(n, n)))
  return q * np.sign(np.diag(r))


def geometry(name: str, plan: Plan) -> dict:
  """W_p (n_p, n), the features' relative firing rates (or None) and what the geometry knows."""
  tri = w.polygon_matrix(6, 3, n_mono=8).astype(np.float64)
  if name == "triangles":
    return {"W": tri, "rates": None}
  if name.startswith("rotated-s"):
    sigma = float(name[len("rotated-s") :])
    g = np.random.default_rng(2).normal(size=tri.shape[0])
    W = np.exp(sigma * g)[:, None] * (_haar(tri.shape[0], np.random.default_rng(1)) @ tri)
    return {"W": W, "rates": None, "undo": np.exp(-sigma * g)}
  if name == "hub":
    rng = np.random.default_rng(3)
    core = w.polygon_matrix(6, 3, n_mono=4).astype(np.float64)  # 16 dims, 18 + 4 features
    n = core.shape[1]
    hub = np.zeros((4, n))
    hub[np.arange(n) % 4, np.arange(n)] = rng.uniform(0.3, 0.5, n)
    W = np.concatenate([core, hub])
    W /= np.linalg.norm(W, axis=0)
    rates = np.where(np.arange(n) >= 18, 2.5, 1.0)
    return {"W": W, "rates": rates / rates.mean()}
  if name.startswith("toy-imp"):
    rng = np.random.default_rng(4)
    rates = np.exp(rng.uniform(-math.log(3), math.log(3), plan.toy_n))
    rates = (rates / rates.mean()).astype(np.float32)
    W, info = w.toy_model_matrix(
      jax.random.key(5),
      plan.toy_n,
      plan.n_p,
      0.9,
      importance=0.9,
      rates=rates,
      steps=plan.toy_steps,
      return_info=True,
    )
    if name.endswith("-raw"):
      W = W * info["column_norms"][None, :]
    return {"W": np.asarray(W, np.float64), "rates": rates}
  raise ValueError(name)


participation_ratio = w.data.superposition.participation_ratio


def k_for(sparsity: float, n: int) -> int:
  """The Top-k budget matched to the expected number of active features, ⌈(1 − S)·n⌉."""
  return max(1, math.ceil(round((1.0 - sparsity) * n, 9)))


def normalise(g) -> np.ndarray:
  g = np.asarray(g, np.float64)
  return (g / np.sqrt(np.mean(g**2))).astype(np.float32)


def gamma_of_z(z) -> np.ndarray:
  """γ of a search point: exp(z − mean z), normalised to mean(γ²) = 1."""
  z = np.asarray(z, np.float64)
  return normalise(np.exp(z - z.mean()))


def proxy_gamma(name: str, W, sample) -> np.ndarray | None:
  """A proxy's γ from a held-out sample of the member's own stream (None: does not apply)."""
  if name.startswith("var"):
    return normalise(np.var(np.asarray(sample, np.float64), axis=0) ** float(name[3:]))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    try:
      if name == "oracle":
        return normalise(wl.make_gamma("oracle", 1.0, W_p=W))
      return normalise(wl.make_gamma(ESTIMATORS[name], 1.0, sample=sample))
    except w.WSAEInputError:
      return None


def coherence(W, gamma) -> float:
  """Mean squared off-diagonal cosine of the columns of ΓW_p (the frame potential per pair)."""
  D = np.asarray(gamma, np.float64)[:, None] * np.asarray(W, np.float64)
  D = D / np.linalg.norm(D, axis=0)
  G = D.T @ D
  n = G.shape[0]
  return float((np.sum(G**2) - n) / (n * (n - 1)))


def closed_form_l_gt(W, gamma, x) -> float:
  """L_GT of the paper's closed-form tied SAE trained on Γx_p, i.e. on the dictionary ΓW_p.

  Γx_p = Σ_j x_j‖Γw_j‖ d_j with unit columns d_j, so the closed form recovers
  x'_j = σ(d_jᵀ Γx_p) in the dictionary's units and x_j = x'_j / ‖Γw_j‖ in the features'. For
  Γ = I and unit columns this is Thm 1's σ(x W_pᵀ W_p).
  """
  D = np.asarray(gamma, np.float64)[:, None] * np.asarray(W, np.float64)
  norms = np.linalg.norm(D, axis=0)
  x = np.asarray(x, np.float64)
  x_m = np.maximum((x @ D.T) @ (D / norms), 0.0) / norms
  return float(np.mean(np.sum((x - x_m) ** 2, axis=1)))


# -- training ------------------------------------------------------------------------------------


def _sae_config(n_p: int, d_sae: int, sparsities, n: int):
  return w.TopKSAEConfig(d_in=n_p, d_sae=d_sae, k=max(k_for(S, n) for S in sparsities))


def _train_and_score(problem, cfg, plan: Plan, members: list[dict], progress) -> list[dict]:
  res = sweep.train_sweep(
    cfg,
    plan.train,
    members,
    problem,
    progress=progress,
    steps_per_call=plan.train.log_every,
    decoder_gamma_every=plan.train.log_every,
  )
  rows = scoring.score_sweep(res, problem, eval_samples=plan.eval_samples)
  keep = ("l_gt", "mcc", "mse", "fvu", "l0", "dead_frac", "diverged_at")
  return [{k: r[k] for k in keep} for r in rows]


class Samples:
  """Held-out x_p of each (seed, S) stream (the γ estimators' input) and features x."""

  def __init__(self, problem, n: int = 8192):
    self.problem, self.n, self._cache = problem, n, {}

  def __call__(self, S, seed):
    key = (float(S), int(seed))
    if key not in self._cache:
      src = self.problem.source(S, seed)
      x, xp = src.sample(problems.HELD_OUT_STEP, self.n)
      self._cache[key] = (np.asarray(x, np.float64), np.asarray(xp, np.float64))
    return self._cache[key]


def search(geo: str, W, rates, d_sae: int, plan: Plan, progress: bool) -> dict:
  """CMA-ES over log γ for each search sparsity, the generations trained as one sweep each."""
  n_p, n = W.shape
  problem = problems.SyntheticProblem(np.asarray(W, np.float32), rates=rates)
  cfg = _sae_config(n_p, d_sae, plan.search_sparsities, n)
  samples = Samples(problem)
  Ss = plan.search_sparsities

  def run(candidates: dict) -> dict:
    """candidates[S] = list of γ (or per-seed lists); returns fitness[S] (list) and raw rows."""
    members, where = [], []
    for seed in plan.search_seeds:
      for S in Ss:
        group = [None] + list(candidates[S])
        assert len(group) % 4 == 0, len(group)
        for i, g in enumerate(group):
          if callable(g):
            g = g(seed)
          m = {"seed": seed, "data_seed": seed, "sparsity": S, "k": k_for(S, n)}
          if g is not None:
            m["gamma"] = g
          members.append(m)
          where.append((seed, S, i))
    rows = _train_and_score(problem, cfg, plan, members, progress=False)
    l = {key: r["l_gt"] for key, r in zip(where, rows)}
    fit = {
      S: [
        float(np.mean([math.log(l[(s, S, i + 1)] / l[(s, S, 0)]) for s in plan.search_seeds]))
        for i in range(len(candidates[S]))
      ]
      for S in Ss
    }
    return fit

  # Generation 0: the proxies (each seed's γ from its own stream), padded with CMA-ES samples.
  per_seed = {
    S: {p: (lambda seed, p=p, S=S: proxy_gamma(p, W, samples(S, seed)[1])) for p in PROXIES}
    for S in Ss
  }
  usable = {
    S: [p for p in PROXIES if all(per_seed[S][p](s) is not None for s in plan.search_seeds)]
    for S in Ss
  }
  out: dict = {}
  es = {}
  pad = {}
  for S in Ss:
    es[S] = cma.CMAEvolutionStrategy(
      np.zeros(n_p),
      plan.sigma0,
      {"popsize": plan.popsize, "seed": 1000 + int(S * 100), "verbose": -9},
    )
    extra = (-(1 + len(usable[S]))) % 4
    pad[S] = [gamma_of_z(z) for z in es[S].ask()[:extra]]
  fit0 = run({S: [per_seed[S][p] for p in usable[S]] + pad[S] for S in Ss})
  t0 = time.perf_counter()
  bar = None
  if progress:
    from tqdm.auto import tqdm

    bar = tqdm(total=plan.generations, desc=f"{geo} d_sae={d_sae} CMA-ES", leave=False)
  for S in Ss:
    f = dict(zip(usable[S], fit0[S][: len(usable[S])]))
    best = min(f, key=f.get) if f and min(f.values()) < 0 else None
    z0 = np.zeros(n_p)
    if best is not None:  # start at the best proxy (seed 0's γ of it)
      z0 = np.log(np.asarray(per_seed[S][best](plan.search_seeds[0]), np.float64))
      z0 -= z0.mean()
    es[S] = cma.CMAEvolutionStrategy(
      z0, plan.sigma0, {"popsize": plan.popsize, "seed": 2000 + int(S * 100), "verbose": -9}
    )
    out[S] = {
      "proxy_fitness": f,
      "start": best or "uniform",
      "history": [],
      "best_fitness": min([0.0, *f.values()]),
      "best_gamma": None,
    }
  for _ in range(plan.generations):
    zs = {S: es[S].ask() for S in Ss}
    fit = run({S: [gamma_of_z(z) for z in zs[S]] for S in Ss})
    for S in Ss:
      es[S].tell(zs[S], fit[S])
      i = int(np.argmin(fit[S]))
      if fit[S][i] < out[S]["best_fitness"]:
        out[S]["best_fitness"], out[S]["best_gamma"] = fit[S][i], gamma_of_z(zs[S][i]).tolist()
      out[S]["history"].append(
        {"min": float(min(fit[S])), "median": float(np.median(fit[S])), "sigma": float(es[S].sigma)}
      )
    if bar is not None:
      bar.update()
  if bar is not None:
    bar.close()
  for S in Ss:
    out[S]["gamma_star"] = gamma_of_z(es[S].result.xfavorite).tolist()
  return {"by_sparsity": {str(S): v for S, v in out.items()}, "seconds": time.perf_counter() - t0}


ARMS = ("sae", "gstar", "gstar-other", *PROXIES, "decoder")
RELU_L1 = (0.01, 0.03, 0.06, 0.1, 0.2, 0.4)
"""ReLU + L1 arms: each arm trains at every λ here; the analysis keeps, per (cell, S, arm), the λ
whose median L0 over the seeds is nearest (in log) to the Top-k arms' k: each arm at its own λ,
all at matched L0."""


def confirm(
  geo: str,
  W,
  rates,
  d_sae: int,
  gstar: dict,
  plan: Plan,
  progress: bool,
  arch: str = "topk",
  *,
  arms: tuple[str, ...] = ARMS,
  sparsities: tuple[float, ...] | None = None,
) -> list[dict]:
  """Every arm on the fresh seeds, paired: 12 members per (seed, S). `arch="tied"`: the same
  arms (Γ* as searched for Top-k) on the paper's tied theory SAE, which has no sparsity setting
  (equal pressure by construction). `arch="relu"`: on ReLU + L1 SAEs, every arm at each λ of
  `RELU_L1` (the analysis matches L0, `relu_at_matched_l0`). `arms`, `sparsities`: a subset
  (default: every arm at the search and control sparsities; Γ* arms need `gstar`)."""
  n_p, n = W.shape
  problem = problems.SyntheticProblem(np.asarray(W, np.float32), rates=rates)
  Ss = sparsities or (*plan.search_sparsities, plan.control_sparsity)
  if arch == "topk":
    cfg = _sae_config(n_p, d_sae, Ss, n)
  elif arch == "relu":
    cfg = w.ReLUSAEConfig(d_in=n_p, d_sae=d_sae)
  else:
    cfg = w.TiedSAEConfig(d_in=n_p, d_sae=d_sae)
  l1s = RELU_L1 if arch == "relu" else (None,)
  samples = Samples(problem)
  lo, hi = plan.search_sparsities[0], plan.search_sparsities[-1]
  members, labels = [], []
  for seed in plan.confirm_seeds:
    for S in Ss:
      own = gstar.get(str(S), gstar.get(str(hi)))
      other = gstar.get(str(hi if S == lo else lo))
      for arm, l1 in itertools.product(arms, l1s):
        m = {"seed": seed, "data_seed": seed, "sparsity": S}
        if arch == "topk":
          m["k"] = k_for(S, n)
        if l1 is not None:
          m["l1_coefficient"] = l1
        g = {"gstar": own, "gstar-other": other}.get(arm)
        if arm in PROXIES:
          g = proxy_gamma(arm, W, samples(S, seed)[1])
          if g is None:  # the estimator does not apply here: the member trains, unscored
            labels.append(None)
            members.append(m)
            continue
        if arm == "decoder":
          m.update(alpha=1.0, gamma_kind="decoder")
        elif g is not None:
          m["gamma"] = np.asarray(g, np.float32)
        members.append(m)
        labels.append(
          {"geometry": geo, "d_sae": d_sae, "sparsity": S, "seed": seed, "arm": arm}
          | ({} if l1 is None else {"l1": l1})
        )
  rows = _train_and_score(
    problem, cfg, plan, members, progress=progress and f"{geo} d_sae={d_sae} confirm {arch}"
  )
  return [{**lab, **r} for lab, r in zip(labels, rows) if lab is not None]


# -- analysis -----------------------------------------------------------------------------------


def _paired(rows, arm, metric, *, relative=True):
  """Per-seed change of `arm` against the plain SAE of the same (seed, S, geometry, d_sae)."""
  base = {r["seed"]: r[metric] for r in rows if r["arm"] == "sae"}
  out = []
  for r in rows:
    if r["arm"] == arm and r["seed"] in base:
      out.append(r[metric] / base[r["seed"]] - 1.0 if relative else r[metric] - base[r["seed"]])
  return np.asarray(out, np.float64)


def _interval(d) -> dict:
  ci = stats.paired_interval(d)
  return {"median": ci.median, "lo": ci.lo, "hi": ci.hi, "n": ci.n, "coverage": ci.coverage}


def arm_readings(cell: str, rows: list[dict]) -> list[dict]:
  """Per sparsity and arm of one cell's rows: the paired changes against the plain SAE of the same
  seed (L_GT and x_p MSE relative, MCC absolute) with their intervals and sign tests; for ReLU +
  L1 rows also the arm's and the plain SAE's λ and median L0."""
  out = []
  for S in sorted({r["sparsity"] for r in rows}):
    rs = [r for r in rows if r["sparsity"] == S]
    for arm in ARMS[1:]:
      d = _paired(rs, arm, "l_gt")
      if len(d) == 0:
        continue
      mse = _paired(rs, arm, "mse")
      out.append(
        {
          "cell": cell,
          "sparsity": S,
          "arm": arm,
          "l_gt_change": _interval(d),
          "mse_change": _interval(mse),
          "mcc_change": _interval(_paired(rs, arm, "mcc", relative=False)),
          "p_less": stats.sign_test(d, alternative="less"),
          "p_greater": stats.sign_test(d, alternative="greater"),
          "p_mse_noninferior": stats.sign_test(mse, margin=MSE_MARGIN, alternative="less"),
        }
      )
      if "l1" in rs[0]:  # ReLU + L1: the arm's own λ and median L0, and the plain SAE's
        for who, name in ((arm, ""), ("sae", "sae_")):
          out[-1][name + "l1"] = next(x["l1"] for x in rs if x["arm"] == who)
          out[-1][name + "l0"] = float(np.median([x["l0"] for x in rs if x["arm"] == who]))
  return out


def analyse(raw: dict, plan: Plan) -> dict:
  """Readings from the trained SAEs alone (re-runnable with --from-json)."""
  readings = []
  for key, g in raw["cells"].items():
    for r in arm_readings(key, g["rows"]):
      r.update(geometry=g["geometry"], d_sae=g["d_sae"])
      r["primary"] = r["arm"] == "gstar" and r["sparsity"] in plan.search_sparsities
      readings.append(r)
  prim = [r for r in readings if r["primary"]]
  for r, p in zip(prim, stats.holm([r["p_less"] for r in prim])):
    r["p_adjusted"] = float(p)
  families: dict = {}
  for r in readings:
    if not r["primary"]:
      families.setdefault(r["arm"], []).append(r)
  for fam in families.values():
    for r, p in zip(fam, stats.benjamini_hochberg([r["p_less"] for r in fam])):
      r["p_adjusted"] = float(p)
  ceiling = {(r["cell"], r["sparsity"]): r for r in readings if r["arm"] == "gstar"}
  for r in readings:
    med = r["l_gt_change"]["median"]
    r["reduces"] = bool(r["p_adjusted"] < 0.05)
    r["mse_ok"] = bool(r["p_mse_noninferior"] < 0.05)
    r["helps_10pct"] = bool(r["reduces"] and med <= -HELPS and r["mse_ok"])
    c = ceiling.get((r["cell"], r["sparsity"]))
    r["ceiling_fraction"] = (
      float(med / c["l_gt_change"]["median"])
      if c is not None and c["reduces"] and c["l_gt_change"]["median"] < 0
      else None
    )
  search = []
  for key, g in raw["cells"].items():
    for S, v in g["search"]["by_sparsity"].items():
      start = math.exp(min([0.0, *v["proxy_fitness"].values()])) - 1.0
      medians = [math.exp(h["median"]) - 1.0 for h in v["history"]]
      x = {
        "cell": key,
        "sparsity": float(S),
        "start": v["start"],
        "best_seen_change": math.exp(v["best_fitness"]) - 1.0,
        "start_change": start,
        "generation_medians_all_above_start": bool(all(m > start for m in medians)),
      }
      if g.get("undo") is not None and np.ptp(g["undo"]) > 0:  # the known answer's direction
        x["corr_log_gstar_log_undo"] = float(
          np.corrcoef(np.log(v["gamma_star"]), np.log(g["undo"]))[0, 1]
        )
      search.append(x)
  return {
    "readings": readings,
    "theory": theory(raw),
    "search": search,
    "prior": raw.get("prior", []),
    "tied_readings": analyse_extra(raw.get("tied", {})),
    "relu_readings": analyse_extra(relu_at_matched_l0(raw)),
  }


def analyse_extra(rows_by_cell: dict) -> list[dict]:
  """The arms on another architecture (the tied theory SAE, ReLU + L1 at matched L0);
  exploratory: Benjamini–Hochberg within each arm."""
  readings = [r for key, rows in rows_by_cell.items() for r in arm_readings(key, rows)]
  for arm in ARMS[1:]:
    fam = [r for r in readings if r["arm"] == arm]
    for r, p in zip(fam, stats.benjamini_hochberg([r["p_less"] for r in fam])):
      r["p_adjusted"] = float(p)
      r["reduces"] = bool(p < 0.05)
      r["mse_ok"] = bool(r["p_mse_noninferior"] < 0.05)
      r["helps_10pct"] = bool(r["reduces"] and r["l_gt_change"]["median"] <= -HELPS and r["mse_ok"])
  return readings


def relu_at_matched_l0(raw: dict) -> dict:
  """The ReLU + L1 rows at each (cell, S, arm)'s own λ: the one whose median L0 over the seeds is
  nearest in log to the Top-k arms' k there (`k_for`), so every arm is compared at matched L0."""
  return {
    key: matched_l0(rows, np.shape(raw["cells"][key]["W"])[1])
    for key, rows in raw.get("relu", {}).items()
  }


def matched_l0(rows: list[dict], n: int) -> list[dict]:
  """One cell's ReLU + L1 rows (every arm at every λ) cut to each (S, arm)'s own λ: the one whose
  median L0 over the seeds is nearest in log to `k_for(S, n)`."""
  keep = []
  for S, arm in sorted({(r["sparsity"], r["arm"]) for r in rows}):
    rs = [r for r in rows if r["sparsity"] == S and r["arm"] == arm]
    l0 = {l1: np.median([r["l0"] for r in rs if r["l1"] == l1]) for l1 in {r["l1"] for r in rs}}
    best = min(l0, key=lambda l1: abs(math.log(max(l0[l1], 1e-3) / k_for(S, n))))
    keep += [r for r in rs if r["l1"] == best]
  return keep


def theory(raw: dict) -> dict:
  """Closed form on ΓW_p and coherence of ΓW_p per (cell, S, arm), against the measured change."""
  out = []
  for key, g in raw["cells"].items():
    for S_key, th in g["closed_form"].items():
      base = th["sae"]
      for arm, v in th.items():
        if arm == "sae":
          continue
        d = _paired([r for r in g["rows"] if r["sparsity"] == float(S_key)], arm, "l_gt")
        out.append(
          {
            "cell": key,
            "sparsity": float(S_key),
            "arm": arm,
            "closed_form_change": v["l_gt"] / base["l_gt"] - 1.0,
            "coherence_change": v["coherence"] / base["coherence"] - 1.0,
            "measured_change": float(np.median(d)) if len(d) else None,
          }
        )
  ok = [o for o in out if o["measured_change"] is not None]

  def rho(a):
    if len(ok) < 3:
      return None
    r = spearmanr([o[a] for o in ok], [o["measured_change"] for o in ok])
    return {"rho": float(r.statistic), "p_value": float(r.pvalue), "n": len(ok)}

  return {
    "rows": out,
    "closed_form_vs_measured": rho("closed_form_change"),
    "coherence_vs_measured": rho("coherence_change"),
  }


def prior_check(W, rates, plan: Plan) -> list[dict]:
  """Spearman ρ(variance, participation ratio) per sparsity, no SAE (the one-minute check)."""
  problem = problems.SyntheticProblem(np.asarray(W, np.float32), rates=rates)
  pr = participation_ratio(W)
  out = []
  for S in (*plan.search_sparsities, plan.control_sparsity):
    xp = Samples(problem)(S, 0)[1]
    r = spearmanr(np.var(xp, axis=0), pr)
    out.append(
      {
        "sparsity": S,
        "spearman_rho": float(r.statistic),
        "p_value": float(r.pvalue),
        "pr_distinct_values": int(len(np.unique(np.round(pr, 6)))),
      }
    )
  return out


def closed_forms(W, rates, gstar: dict, Ss, samples_fn) -> dict:
  out = {}
  for S in Ss:
    x, xp = samples_fn(S, 100)
    own = gstar.get(str(S), gstar[max(gstar)])
    arms = {"sae": np.ones(W.shape[0]), "gstar": own}
    for p in PROXIES:
      g = proxy_gamma(p, W, xp)
      if g is not None:
        arms[p] = g
    out[str(S)] = {
      a: {"l_gt": closed_form_l_gt(W, g, x), "coherence": coherence(W, g)} for a, g in arms.items()
    }
  return out


# -- figures and RESULTS.md ------------------------------------------------------------------------


def plot(raw: dict, result: dict, out: pathlib.Path) -> list[pathlib.Path]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  cells = list(raw["cells"].items())
  paths = []
  fig, axes = plt.subplots(
    2, math.ceil(len(cells) / 2), figsize=(4.2 * math.ceil(len(cells) / 2), 6.4), squeeze=False
  )
  for ax, (key, g) in zip(axes.T.ravel(), cells):
    W = np.asarray(g["W"])
    S = str(max(float(s) for s in g["search"]["by_sparsity"]))
    gs = np.asarray(g["search"]["by_sparsity"][S]["gamma_star"])
    order = np.argsort(participation_ratio(W))
    xs = np.arange(len(order))
    rates = None if g["rates"] is None else np.asarray(g["rates"], np.float32)
    var = normalise(
      np.var(
        Samples(problems.SyntheticProblem(np.asarray(W, np.float32), rates=rates))(float(S), 0)[1],
        axis=0,
      )
    )
    ax.semilogy(xs, gs[order], "o-", label="Γ* (search)", color="C3")
    ax.semilogy(xs, var[order], "s--", label="variance (normalised)", color="C0", ms=3)
    ax.semilogy(
      xs,
      normalise(1.0 / participation_ratio(W))[order],
      "^:",
      label="PR⁻¹ (oracle)",
      color="C2",
      ms=3,
    )
    if g.get("undo") is not None and np.ptp(g["undo"]) > 0:
      ax.semilogy(xs, normalise(g["undo"])[order], "x", label="known undo", color="k")
    ax.set_title(f"{key}, S = {S}", fontsize=9)
    ax.set_xlabel("dimension, by participation ratio", fontsize=8)
    ax.set_ylabel("γ (mean γ² = 1)", fontsize=8)
    ax.tick_params(labelsize=7)
  for ax in axes.T.ravel()[len(cells) :]:
    ax.axis("off")
  axes[0, 0].legend(fontsize=7)
  fig.suptitle("Γ* per dimension beside the variance and the participation ratio", fontsize=10)
  paths.append(reproduce.save_figure(fig, out / "gamma_ceiling_gamma.png", dpi=110))

  rs = [r for r in result["readings"] if r["sparsity"] in (0.7, 0.9)]
  keys = sorted({(r["cell"], r["sparsity"]) for r in rs})
  arms = ARMS[1:]
  fig, axes = plt.subplots(
    1, 2, figsize=(13, 0.42 * len(keys) * len(arms) / 4 + 2), gridspec_kw={"width_ratios": [3, 1]}
  )
  ax = axes[0]
  ylabels, ys, y = [], [], 0
  for key in keys:
    for j, arm in enumerate(arms):
      r = next((r for r in rs if (r["cell"], r["sparsity"]) == key and r["arm"] == arm), None)
      if r is None:
        continue
      c = r["l_gt_change"]
      ax.errorbar(
        100 * c["median"],
        y,
        xerr=[[100 * (c["median"] - c["lo"])], [100 * (c["hi"] - c["median"])]],
        fmt="o" if arm == "gstar" else ".",
        color=f"C{j % 10}",
        ms=4,
        lw=1,
      )
      ylabels.append(f"{key[0]} S={key[1]}: {arm}" if arm == "gstar" else arm)
      ys.append(y)
      y += 1
    y += 0.5
  ax.axvline(0, color="k", lw=0.8)
  ax.axvline(-100 * HELPS, color="grey", ls=":", lw=0.8)
  ax.set_yticks(ys, ylabels, fontsize=6)
  ax.set_xlabel("change in held-out L_GT against the plain SAE (%), median and 95% interval")
  ax.set_title("every arm on the fresh seeds (Top-k, d_sae = n); Γ* = o", fontsize=10)
  ax.invert_yaxis()
  ax2 = axes[1]
  for i, (key, g) in enumerate(cells):
    for S, v in g["search"]["by_sparsity"].items():
      ax2.plot(
        [100 * (math.exp(h["min"]) - 1) for h in v["history"]],
        color=f"C{i}",
        ls="-" if S == "0.9" else "--",
        lw=1,
        label=f"{key} S={S}",
      )
  ax2.set_xlabel("generation")
  ax2.set_ylabel("best candidate's L_GT change on the search seeds (%)")
  ax2.legend(fontsize=6)
  ax2.set_title("CMA-ES progress", fontsize=10)
  paths.append(reproduce.save_figure(fig, out / "gamma_ceiling_effects.png", dpi=110))
  return paths


def pct(c) -> str:
  return f"{100 * c['median']:+.1f}% [{100 * c['lo']:+.1f}, {100 * c['hi']:+.1f}]"


def results_markdown(result: dict) -> str:
  rs = result["readings"]
  lines = [
    BEGIN,
    "",
    f"Produced by `{result['command']}` ({result['machine']}; "
    f"{result['wall_seconds'] / 60:.1f} min). Top-k SAEs (recipe), d_sae = n, "
    f"{len(result['plan']['confirm_seeds'])} fresh paired seeds; changes are median "
    f"paired relative changes of held-out L_GT against the plain SAE with order-statistic "
    f"95% intervals.",
    "",
    "**Primary readings** (Γ* against the plain SAE; Holm over these):",
    "",
    "| geometry | S | search seeds: start, best seen | ΔL_GT, Γ* (fresh seeds) | Holm p | "
    "Δ x_p MSE | ΔMCC | helps ≥ 10%? |",
    "|---|---|---|---|---|---|---|---|",
  ]
  search = {(x["cell"], x["sparsity"]): x for x in result.get("search", [])}
  for r in rs:
    if r["primary"]:
      m = r["mcc_change"]
      x = search.get((r["cell"], r["sparsity"]))
      sx = (
        f"{x['start']} {100 * x['start_change']:+.0f}%, {100 * x['best_seen_change']:+.0f}%"
        if x
        else "–"
      )
      lines.append(
        f"| {r['cell']} | {r['sparsity']} | {sx} | {pct(r['l_gt_change'])} | "
        f"{r['p_adjusted']:.3g} | {pct(r['mse_change'])} | {m['median']:+.3f} | "
        f"{'**yes**' if r['helps_10pct'] else 'no'} |"
      )
  lines += [
    "",
    "**Every arm** (median ΔL_GT; `*` = reduction significant after BH within the arm "
    "(Holm for Γ*); `f` = fraction of the ceiling captured where the ceiling is "
    "significant):",
    "",
  ]
  cells = sorted({(r["cell"], r["sparsity"]) for r in rs})
  arms = [a for a in ARMS[1:] if any(r["arm"] == a for r in rs)]
  lines.append("| geometry | S | " + " | ".join(arms) + " |")
  lines.append("|---|---|" + "---|" * len(arms))
  for cell, S in cells:
    cols = []
    for a in arms:
      r = next((r for r in rs if r["cell"] == cell and r["sparsity"] == S and r["arm"] == a), None)
      if r is None:
        cols.append("–")
        continue
      s = f"{100 * r['l_gt_change']['median']:+.0f}%{'*' if r['reduces'] else ''}"
      if r["ceiling_fraction"] is not None and a != "gstar":
        s += f" (f {r['ceiling_fraction']:.2f})"
      cols.append(s)
    lines.append(f"| {cell} | {S} | " + " | ".join(cols) + " |")
  lines += _extra_markdown(result.get("tied_readings") or [], "tied")
  lines += _extra_markdown(result.get("relu_readings") or [], "relu")
  th = result["theory"]
  lines += [
    "",
    "**Prior check** (no SAE): Spearman ρ(variance, participation ratio) at S = 0.7 / "
    "0.9 / 0.99: "
    + "; ".join(
      f"{c}: " + " / ".join(f"{p['spearman_rho']:+.2f}" for p in pr)
      for c, pr in result["prior"].items()
    )
    + ".",
  ]
  for name, label in (
    ("closed_form_vs_measured", "closed form on ΓW_p"),
    ("coherence_vs_measured", "coherence of ΓW_p"),
  ):
    v = th[name]
    if v:
      lines.append(
        f"Theory as a predictor: Spearman ρ({label} change, measured change) = "
        f"{v['rho']:+.2f} (p = {v['p_value']:.2g}, n = {v['n']} arm × cell readings)."
      )
  lines += ["", END]
  return "\n".join(lines)


EXTRA_TITLES = {
  "tied": (
    "The tied theory SAE",
    "the same arms on the paper's SAE, Γ* as searched for Top-k",
  ),
  "relu": (
    "ReLU + L1 at matched L0",
    "the same arms, Γ* as searched for Top-k, each arm at its own λ of "
    + ", ".join(f"{v:g}" for v in RELU_L1)
    + ": the one whose median L0 is nearest the Top-k arms' k; a cell's `λ` column gives the "
    "plain SAE's λ and L0",
  ),
}


def _extra_markdown(rs: list[dict], kind: str) -> list[str]:
  """The table of `analyse_extra`'s readings for the tied or ReLU arms."""
  if not rs:
    return []
  title, what = EXTRA_TITLES[kind]
  arms = [a for a in ARMS[1:] if any(r["arm"] == a for r in rs)]
  lam = kind == "relu"
  lines = [
    "",
    f"**{title}** ({what}; exploratory: median ΔL_GT, `*` = reduction significant after BH "
    "within the arm, `m` = x_p MSE not shown non-inferior (within +10%, one-sided sign test), "
    "i.e. not shown to be at equal reconstruction):",
    "",
    "| geometry | S | " + ("λ, L0 (SAE) | " if lam else "") + " | ".join(arms) + " |",
    "|---|---|" + ("---|" if lam else "") + "---|" * len(arms),
  ]
  base = {(r["cell"], r["sparsity"]): r for r in rs if r["arm"] == arms[0]}
  for cell, S in sorted({(r["cell"], r["sparsity"]) for r in rs}):
    cols = []
    if lam:
      b = base.get((cell, S))
      cols.append(f"{b['sae_l1']:g}, {b['sae_l0']:.1f}" if b and "sae_l1" in b else "–")
    for a in arms:
      r = next((r for r in rs if r["cell"] == cell and r["sparsity"] == S and r["arm"] == a), None)
      if r is None:
        cols.append("–")
        continue
      flag = ("*" if r["reduces"] else "") + ("" if r["mse_ok"] else " m")
      cols.append(f"{100 * r['l_gt_change']['median']:+.0f}%{flag}")
    lines.append(f"| {cell} | {S} | " + " | ".join(cols) + " |")
  helps = [r for r in rs if r["helps_10pct"]]
  lines += [
    "",
    f"{title}, cells where an arm reduces L_GT by ≥ 10% at equal reconstruction (BH): "
    + (
      "; ".join(
        f"{r['cell']} S = {r['sparsity']} {r['arm']} {pct(r['l_gt_change'])}" for r in helps
      )
      if helps
      else "none"
    )
    + ".",
  ]
  return lines


def write_results_md(result, path: pathlib.Path = RESULTS_MD) -> None:
  reproduce.write_block(
    path,
    results_markdown(result),
    BEGIN,
    END,
    lambda text, block: text.rstrip("\n") + "\n\n## The γ ceiling (issue #23)\n\n" + block + "\n",
  )


def jsonable(o):
  if isinstance(o, np.ndarray):
    return o.tolist()
  if isinstance(o, (np.floating, np.integer)):
    return o.item()
  raise TypeError(type(o))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny grid for CI (about a minute)")
  p.add_argument("--plan", choices=tuple(PLANS), default=None, help="full (default), smoke, gpu")
  p.add_argument("--out", default=str(OUT), help="output folder")
  p.add_argument(
    "--no-results-md",
    action="store_true",
    help="do not rewrite experiments/RESULTS.md (implied by --smoke or --out)",
  )
  p.add_argument("--no-progress", action="store_true")
  p.add_argument(
    "--add-tied",
    default=None,
    metavar="JSON",
    help="train the confirmation arms on the tied theory SAE (Γ* from this earlier "
    "gamma_ceiling.json, no new search) and re-analyse with them",
  )
  p.add_argument(
    "--add-relu",
    default=None,
    metavar="JSON",
    help="train the confirmation arms on ReLU + L1 SAEs at every λ of RELU_L1 (Γ* from this "
    "earlier gamma_ceiling.json) and re-analyse with them at matched L0",
  )
  p.add_argument(
    "--from-json",
    default=None,
    metavar="JSON",
    help="re-analyse the trained SAEs of an earlier gamma_ceiling.json",
  )
  a = p.parse_args(argv)
  name = "smoke" if a.smoke else (a.plan or "full")
  plan = PLANS[name]
  out = pathlib.Path(a.out)
  w._validate.check_writable_dir(out, "--out")
  t0 = time.perf_counter()
  add = "tied" if a.add_tied else "relu" if a.add_relu else None
  if a.from_json or add:
    earlier = json.loads(pathlib.Path(a.from_json or a.add_tied or a.add_relu).read_text())
    raw, t0 = earlier["raw"], t0 - earlier["wall_seconds"]
    trained_by = earlier["command"].split(" (re-analysed")[0]
    if add:  # the added arms train as the earlier run's plan says (seeds, steps)
      name = earlier["plan"]["name"]
      plan = PLANS[name]
      raw[add] = {}
      for key, g in raw["cells"].items():
        t = time.perf_counter()
        gstar = {S: v["gamma_star"] for S, v in g["search"]["by_sparsity"].items()}
        W = np.asarray(g["W"], np.float32)
        rates = None if g["rates"] is None else np.asarray(g["rates"], np.float32)
        rows = confirm(g["geometry"], W, rates, g["d_sae"], gstar, plan, not a.no_progress, add)
        raw[add][key] = json.loads(json.dumps(rows, default=jsonable))
        print(f"{key:>14}: {len(rows)} {add} confirmation SAEs, {time.perf_counter() - t:6.1f} s")
      args = " ".join(
        ["python", "experiments/gamma_ceiling.py", *(sys.argv[1:] if argv is None else argv)]
      )
      trained_by += f" + {add} arms: {args}"
  else:
    raw = {"cells": {}, "prior": {}}
    for geo in plan.geometries:
      G = geometry(geo, plan)
      W, rates = G["W"], G["rates"]
      raw["prior"][geo] = prior_check(W, rates, plan)
      for f in plan.d_sae_factors:
        d_sae = f * W.shape[1]
        key = geo if len(plan.d_sae_factors) == 1 else f"{geo} d_sae={f}n"
        t = time.perf_counter()
        s = search(geo, W, rates, d_sae, plan, not a.no_progress)
        gstar = {S: v["gamma_star"] for S, v in s["by_sparsity"].items()}
        rows = confirm(geo, W, rates, d_sae, gstar, plan, not a.no_progress)
        problem = problems.SyntheticProblem(np.asarray(W, np.float32), rates=rates)
        raw["cells"][key] = {
          "geometry": geo,
          "d_sae": d_sae,
          "W": W,
          "rates": rates,
          "undo": G.get("undo"),
          "search": s,
          "rows": rows,
          "closed_form": closed_forms(
            W, rates, gstar, (*plan.search_sparsities, plan.control_sparsity), Samples(problem)
          ),
        }
        print(
          f"{key:>14}: search {s['seconds']:6.1f} s, {len(rows)} confirmation SAEs, "
          f"{time.perf_counter() - t:6.1f} s in all",
          flush=True,
        )
    raw = json.loads(json.dumps(raw, default=jsonable))
  command = " ".join(
    ["python", "experiments/gamma_ceiling.py", *(sys.argv[1:] if argv is None else argv)]
  )
  if a.from_json:
    command = f"{trained_by} (re-analysed: {command})"
  elif add:
    command = trained_by
  result = {
    "command": command,
    "machine": reproduce.machine(),
    "plan": {**dataclasses.asdict(plan), "train": dataclasses.asdict(plan.train), "name": name},
    **analyse(raw, plan),
  }
  result["prior"] = raw["prior"]
  result["wall_seconds"] = time.perf_counter() - t0
  payload = {**result, "raw": raw}
  from wsae_jax.storage import records

  records.write_json(
    out / "gamma_ceiling.json", json.loads(json.dumps(payload, default=jsonable)), indent=1
  )
  plot(raw, result, out)
  if not (a.smoke or a.no_results_md or pathlib.Path(a.out).resolve() != OUT.resolve()):
    write_results_md(result)
  return result


if __name__ == "__main__":
  main()
