"""Settles the paper's synthetic claims (Fig. 2, Fig. 3) under every plausible reading, in one command.

    python experiments/reproduce.py             # the full study (~20 min on 2 CPU cores)
    python experiments/reproduce.py --smoke     # a tiny grid in well under 2 minutes (CI runs it)
    python experiments/reproduce.py --out DIR   # write elsewhere (default experiments/results)

Writes `reproduce.json` (every cell, every seed, every metric, every verdict, the wall time),
`reproduce_fig2.png`, `reproduce_fig3.png` (paired WSAE − SAE differences of L_GT) and
`reproduce_fig3_panels.png` (the paper's three Fig. 3 panels), and rewrites the block between the
`reproduce:begin` / `reproduce:end` markers of experiments/RESULTS.md from the JSON (unless
`--out` points elsewhere or `--no-results-md` is given).

The readings (each a named axis of every row of the JSON):
  * geometry: "toy200" (a trained Elhage toy model, n = 200, n_p = 20: the paper's size),
    "toy40" (a toy model with n = 40 ≈ 2·n_p, where recovery is possible) and "triangles"
    (6 planes of regular triangles + 8 monosemantic dimensions, n = 26: non-positive interference,
    as the theorems assume, with dimensions of different polysemanticity).
  * kind: "tied" (the theory SAE, d_sae = n), "tied-narrow" (d_sae = 30 < 2·n_p, where a
    tied SAE cannot reconstruct exactly and weighting can move the optimum), "relu" (ReLU + L1,
    variant = λ from a grid spanning the true L0) and "topk" (variant "k" = ⌈(1 − S)·n⌉ or "2k").
  * magnitude: "uniform" (Uniform[0, 1], the inferred law), and on the triangles also "constant"
    (every active feature is 1) and "exponential" (heavy-tailed, mean 1).
  * sparsity S ∈ {0.5, 0.7, 0.9, 0.99}; weighting: "sae" (α = 0), "var0.5", "var1" (γ = Var^α, the
    paper's proxy) and "oracle" (γ = PR^(−1), the participation ratio of each dimension's row of
    W_p: the paper's principle, monosemantic dimensions weighted up).
  * seed: 5 per cell; the SAE and the WSAEs of a seed share the initialisation and every batch.

Every claim × reading gets the paired WSAE − SAE difference over seeds with a 95% bootstrap
interval and a verdict decided by the interval (`wsae_jax.evaluation.stats`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import wsae_jax as w
from wsae_jax.evaluation import metrics
from wsae_jax.evaluation import stats
from wsae_jax.training import sweep
from wsae_jax.data import problems
from wsae_jax.evaluation import scoring

HERE = pathlib.Path(__file__).parent
OUT = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"
N_P = 20
NARROW = 30  # d_sae of the narrow tied SAE: < 2·n_p, so it cannot reconstruct x_p exactly
LAMBDAS = (0.03, 0.1, 0.3, 1.0)  # ReLU L1 grid; L0 spans the true (1 − S)·n (calibration: JSON)
WEIGHTINGS = ("sae", "var0.5", "var1", "oracle")
TAU_RELATIVE, TAU_DATA = 0.5, 0.1  # the Fig. 2 counting rules (b) and (c)


@dataclasses.dataclass(frozen=True)
class Plan:
  """The grid and the training budget of one run of the study."""

  geometries: tuple[str, ...]
  kinds: tuple[str, ...]
  sparsities: tuple[float, ...]
  seeds: tuple[int, ...]
  magnitudes: dict  # geometry -> magnitudes studied there
  lambdas: tuple[float, ...]
  train: w.TrainConfig
  eval_samples: int
  data_rule_samples: int
  toy_steps: int


FULL = Plan(
    geometries=("toy200", "toy40", "triangles"), kinds=("tied", "tied-narrow", "relu", "topk"),
    sparsities=(0.5, 0.7, 0.9, 0.99), seeds=(0, 1, 2, 3, 4),
    magnitudes={"toy200": ("uniform",), "toy40": ("uniform",),
                "triangles": ("uniform", "constant", "exponential")},
    lambdas=LAMBDAS,
    train=w.TrainConfig(steps=2000, batch_size=256, learning_rate=3e-3, warmup_steps=100,
                        decay_fraction=0.2, log_every=250),
    eval_samples=4096, data_rule_samples=512, toy_steps=3000)

SMOKE = Plan(
    geometries=("toy40", "triangles"), kinds=("tied", "tied-narrow", "relu", "topk"),
    sparsities=(0.5, 0.9), seeds=(0, 1, 2),
    magnitudes={"toy40": ("uniform",), "triangles": ("uniform", "constant")},
    lambdas=(0.1, 0.3),
    train=w.TrainConfig(steps=30, batch_size=64, learning_rate=3e-3, warmup_steps=5, log_every=30),
    eval_samples=512, data_rule_samples=64, toy_steps=200)


# -- the problems and the SAEs ------------------------------------------------------------------

def geometry(name: str, toy_steps: int) -> np.ndarray:
  if name == "toy200":
    return np.asarray(w.toy_model_matrix(jax.random.key(0), 200, N_P, 0.9, steps=toy_steps))
  if name == "toy40":
    return np.asarray(w.toy_model_matrix(jax.random.key(1), 40, N_P, 0.9, steps=toy_steps))
  if name == "triangles":
    return w.polygon_matrix(6, 3, n_mono=8)
  raise ValueError(name)


participation_ratio = w.data.superposition.participation_ratio


def k_for(sparsity: float, n: int) -> int:
  """The Top-k budget matched to the expected number of active features, ⌈(1 − S)·n⌉."""
  return max(1, math.ceil(round((1.0 - sparsity) * n, 9)))


def sae_config(kind: str, n: int, plan: Plan):
  """The base config of a kind (for topk: the largest k any member uses) and its variants."""
  if kind == "tied":
    return w.TiedSAEConfig(d_in=N_P, d_sae=n), lambda S: [("-", {})]
  if kind == "tied-narrow":
    return w.TiedSAEConfig(d_in=N_P, d_sae=NARROW), lambda S: [("-", {})]
  if kind == "relu":
    return (w.ReLUSAEConfig(d_in=N_P, d_sae=n),
            lambda S: [(f"λ={lam:g}", {"l1_coefficient": lam}) for lam in plan.lambdas])
  if kind == "topk":
    k_max = max(min(2 * k_for(S, n), n) for S in plan.sparsities)
    return (w.TopKSAEConfig(d_in=N_P, d_sae=n, k=k_max),
            lambda S: [("k", {"k": k_for(S, n)}), ("2k", {"k": min(2 * k_for(S, n), n)})])
  raise ValueError(kind)


# Weightings estimated from a sample of the member's own stream (the weights issue's estimators).
SAMPLE_WEIGHTINGS = {"robust1": "robust-variance", "kurt1": "kurtosis", "zero1": "zero-fraction"}


def weighting_member(name: str, W, sample=None) -> dict:
  """The sweep-member fields of a weighting; `sample()` gives the stream's held-out x_p."""
  if name == "sae":
    return {"alpha": 0.0}
  if name.startswith("var"):
    return {"alpha": float(name[3:])}
  if name == "oracle":
    return {"gamma": w.objectives.weights.weights_from_scores(1.0 / participation_ratio(W), 1.0)}
  if name in SAMPLE_WEIGHTINGS:
    import warnings
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)
      try:
        return {"gamma": w.objectives.weights.gamma_from_sample(SAMPLE_WEIGHTINGS[name], sample(), 1.0)}
      except w.WSAEInputError:  # the estimator does not apply (e.g. no exact zeros): no member
        return None
  raise ValueError(name)


# -- one sweep per (geometry, magnitude, kind) ------------------------------------------------------

def run_cell(geo: str, W, magnitude: str, kind: str, plan: Plan, progress: bool,
             weightings=WEIGHTINGS) -> list[dict]:
  n = W.shape[1]
  cfg, variants = sae_config(kind, n, plan)
  members, labels = [], []
  # Members of one (seed, S) stream are contiguous, in groups of a multiple of 4: every chunk of the
  # compiled sweep reads one stream (its batch goes to the chunk's members unbatched).
  for seed in plan.seeds:
    for S in plan.sparsities:
      sample = lambda S=S, seed=seed: np.asarray(w.SyntheticSource(
          W, S, 1, seed=seed, magnitude=magnitude).sample(problems.HELD_OUT_STEP, 8192)[1])
      for variant, extra in variants(S):
        for wt in weightings:
          fields = weighting_member(wt, W, sample)
          if fields is None:
            continue
          members.append({"seed": seed, "data_seed": seed, "sparsity": S, **extra, **fields})
          labels.append({"geometry": geo, "magnitude": magnitude, "kind": kind,
                         "variant": variant, "sparsity": S, "seed": seed, "weighting": wt})
  problem = problems.SyntheticProblem(W, magnitude=magnitude)
  res = sweep.train_sweep(cfg, plan.train, members, problem,
                          progress=progress and f"{geo}/{magnitude}/{kind}")
  table = scoring.score_sweep(res, problem, eval_samples=plan.eval_samples)
  rows = []
  held_out = {}
  for i, (m, lab, row) in enumerate(zip(members, labels, table)):
    key = (m["data_seed"], m["sparsity"])
    if key not in held_out:
      src = w.SyntheticSource(W, m["sparsity"], 1, seed=m["data_seed"], magnitude=magnitude)
      held_out[key] = np.asarray(src.features(problems.HELD_OUT_STEP + 1, plan.eval_samples))
    x = held_out[key]
    cfg_i = res.member_config(i)
    p = {k: jnp.asarray(v) for k, v in res.params(i).items()}
    z = np.asarray(w.encode(cfg_i, p, jnp.asarray(x @ W.T)))
    match = metrics.match_latents(np.asarray(w.models.decoder_matrix(cfg_i, p)), W)
    extra = {
        "fpl_probe": row["features_per_latent"],
        "fpl_relative": metrics.features_per_latent_relative(cfg_i, p, W, tau=TAU_RELATIVE),
        "fpl_data": metrics.features_per_latent_data(cfg_i, p, x[:plan.data_rule_samples], W,
                                                     tau=TAU_DATA),
        "l_gt_active": metrics.gt_loss_active(x, z, match),
        "l_gt_alive": metrics.gt_loss_alive(x, z, match),
        "true_l0": float(np.mean(np.sum(x > 0, axis=1))),
    }
    keep = ("l_gt", "mse", "fvu", "l0", "dead_frac", "latent_var", "mcc", "match_cos", "mmcs",
            "shrinkage", "vanishing", "diverged_at")
    rows.append({**lab, "d_sae": cfg.d_sae, "n": n,
                 **{k: row[k] for k in keep}, **extra})
  return rows, res.seconds


# -- claims, intervals, verdicts ------------------------------------------------------------------

# Fig. 3's claims: (name, metric, direction, what the paper says).
FIG3_CLAIMS = (
    ("L_GT lower", "l_gt", "lower", "WSAE reaches lower L_GT than the SAE at low S"),
    ("L_GT lower on active coordinates (i)", "l_gt_active", "lower",
     "…more pronounced on non-sparse dimensions: reading (i), coordinates with x_j > 0"),
    ("L_GT lower on alive features (ii)", "l_gt_alive", "lower",
     "…reading (ii), features whose matched latent is alive"),
    ("recovered variance higher", "latent_var", "higher",
     "WSAE's recovered features have higher per-dimension variance"),
    ("x_p reconstruction the same", "mse", "same", "about the same x_p reconstruction"),
)
FIG2_RULES = (("fpl_probe", "(a) probes > 0"), ("fpl_relative", f"(b) probes > {TAU_RELATIVE}·max"),
              ("fpl_data", f"(c) data, terms > {TAU_DATA}·pre-activation"))
SAME_MARGIN = 0.10  # "about the same": the interval of the difference within ±10% of the SAE's value
RECOVERY_MCC = 0.5  # below this the plain SAE recovers nothing, and a weighting cannot be judged


def _reading_key(r, *names):
  return tuple(r[k] for k in names)


def analyse(rows: list[dict]) -> list[dict]:
  """Every claim × reading: the paired interval over seeds and its verdict."""
  claims = []
  cell_keys = ("geometry", "magnitude", "kind", "variant")
  by_cell = {}
  for r in rows:
    by_cell.setdefault(_reading_key(r, *cell_keys), []).append(r)
  for cell, rs in by_cell.items():
    reading = dict(zip(cell_keys, cell))
    sae = {(r["sparsity"], r["seed"]): r for r in rs if r["weighting"] == "sae"}
    sparsities = sorted({S for S, _ in sae})
    seeds = sorted({s for _, s in sae})
    # Fig. 2: with the plain SAE, the count falls from the lowest to the highest S.
    lo_S, hi_S = sparsities[0], sparsities[-1]
    for metric, rule in FIG2_RULES:
      d = [sae[(hi_S, s)][metric] - sae[(lo_S, s)][metric] for s in seeds]
      ci = stats.paired_bootstrap(d)
      claims.append({"figure": "Fig. 2", "claim": "features per latent falls as S rises",
                     "rule": rule, "metric": metric, **reading, "sparsity": f"{lo_S}→{hi_S}",
                     "weighting": "sae", "baseline": float(np.mean([sae[(lo_S, s)][metric]
                                                                    for s in seeds])),
                     **ci.as_dict(), "verdict": stats.verdict(ci, "lower")})
    # Fig. 3: each weighting against the plain SAE, at every S.
    for S in sparsities:
      base = [sae[(S, s)] for s in seeds]
      recovers = float(np.mean([b["mcc"] for b in base]))
      for wt in dict.fromkeys(r["weighting"] for r in rs if r["weighting"] != "sae"):
        other = {r["seed"]: r for r in rs if r["weighting"] == wt and r["sparsity"] == S}
        if set(other) != set(seeds):  # the weighting does not apply at this S (see run_cell)
          continue
        for name, metric, direction, _ in FIG3_CLAIMS:
          d = [other[s][metric] - sae[(S, s)][metric] for s in seeds]
          ci = stats.paired_bootstrap(d)
          ref = float(np.mean([b[metric] for b in base]))
          margin = SAME_MARGIN * abs(ref) + 1e-9
          claims.append({"figure": "Fig. 3", "claim": name, "metric": metric, **reading,
                         "sparsity": S, "weighting": wt, "baseline": ref, "sae_mcc": recovers,
                         "recovery_possible": recovers >= RECOVERY_MCC,
                         **ci.as_dict(), "verdict": stats.verdict(ci, direction, margin=margin)})
  return claims


# -- figures ----------------------------------------------------------------------------------------

HEADLINE_VARIANT = {"tied": "-", "tied-narrow": "-", "relu": "λ=0.3", "topk": "k"}


def _headline(rows, geo, kind):
  v = HEADLINE_VARIANT[kind]
  if kind == "relu" and not any(r["variant"] == v for r in rows):
    v = sorted({r["variant"] for r in rows if r["kind"] == "relu"})[-1]
  return [r for r in rows if r["geometry"] == geo and r["kind"] == kind and r["variant"] == v
          and r["magnitude"] == "uniform"]


def delta_errorbar(ax, cs, offset: float, **kw) -> None:
  """Paired differences (% of the SAE's value) with their intervals, one point per claim."""
  rel = lambda a, c: 100 * a / max(abs(c["baseline"]), 1e-12)
  ax.errorbar(np.arange(len(cs)) + offset, [rel(c["mean"], c) for c in cs],
              yerr=[[rel(c["mean"] - c["lo"], c) for c in cs],
                    [rel(c["hi"] - c["mean"], c) for c in cs]], fmt="o", ms=3, capsize=3, **kw)
  ax.set_xticks(range(len(cs)), [str(c["sparsity"]) for c in cs])
  ax.axhline(0, color="k", lw=0.8)


def _style(ax, title: str, ylabel: str, legend: bool) -> None:
  ax.set_title(title, fontsize=9)
  ax.set_xlabel("sparsity S")
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  if legend:
    ax.legend(fontsize=7)


def _save(fig, path: pathlib.Path, title: str | None = None) -> pathlib.Path:
  import matplotlib.pyplot as plt
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


def plot(result, out: pathlib.Path) -> list[pathlib.Path]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows, claims = result["rows"], result["claims"]
  geos, kinds = result["plan"]["geometries"], result["plan"]["kinds"]
  paths = []

  # Fig. 2: features per latent against S, each counting rule, plain SAE.
  fig, axes = plt.subplots(len(geos), len(kinds), figsize=(4 * len(kinds), 3.2 * len(geos)),
                           squeeze=False)
  for gi, geo in enumerate(geos):
    for ki, kind in enumerate(kinds):
      ax = axes[gi, ki]
      rs = [r for r in _headline(rows, geo, kind) if r["weighting"] == "sae"]
      Ss = sorted({r["sparsity"] for r in rs})
      for metric, rule in FIG2_RULES:
        m = [np.mean([r[metric] for r in rs if r["sparsity"] == S]) for S in Ss]
        sd = [np.std([r[metric] for r in rs if r["sparsity"] == S]) for S in Ss]
        ax.errorbar(range(len(Ss)), m, yerr=sd, marker="o", ms=3, capsize=3, label=rule)
      ax.set_xticks(range(len(Ss)), [str(S) for S in Ss])
      ax.set_yscale("log")
      _style(ax, f"{geo} · {kind} {HEADLINE_VARIANT[kind] if kind in ('relu', 'topk') else ''}",
             "features per latent", gi == ki == 0)
  paths.append(_save(fig, out / "reproduce_fig2.png",
                     "Fig. 2 under three counting rules (plain SAE; mean ± sd over seeds)"))

  # Fig. 3 as paired differences: relative ΔL_GT with 95% intervals, per weighting.
  fig, axes = plt.subplots(len(geos), len(kinds), figsize=(4 * len(kinds), 3.2 * len(geos)),
                           squeeze=False)
  colours = {"var0.5": "tab:orange", "var1": "tab:red", "oracle": "tab:green"}
  for gi, geo in enumerate(geos):
    for ki, kind in enumerate(kinds):
      ax = axes[gi, ki]
      v = _headline(rows, geo, kind)[0]["variant"]
      for j, wt in enumerate(WEIGHTINGS[1:]):
        cs = sorted([c for c in claims if c["figure"] == "Fig. 3" and c["metric"] == "l_gt"
                     and c["geometry"] == geo and c["kind"] == kind and c["variant"] == v
                     and c["magnitude"] == "uniform" and c["weighting"] == wt],
                    key=lambda c: c["sparsity"])
        delta_errorbar(ax, cs, (j - 1) * 0.12, color=colours[wt], label=wt)
      _style(ax, f"{geo} · {kind} {v if v != '-' else ''}", "ΔL_GT, WSAE − SAE (% of SAE)",
             gi == ki == 0)
  paths.append(_save(fig, out / "reproduce_fig3.png", "Fig. 3: paired difference of L_GT "
                     "(below 0: the WSAE recovers better), 95% bootstrap CI"))

  # The paper's three Fig. 3 panels (absolute values) for the Top-k SAE with k = ⌈(1−S)n⌉.
  kind = "topk" if "topk" in kinds else kinds[0]
  panels = (("l_gt", "L_GT"), ("latent_var", "per-dim variance of recovered features"),
            ("mse", "x_p reconstruction MSE"))
  fig, axes = plt.subplots(len(geos), 3, figsize=(13, 3.2 * len(geos)), squeeze=False)
  for gi, geo in enumerate(geos):
    rs = _headline(rows, geo, kind)
    Ss = sorted({r["sparsity"] for r in rs})
    for pi, (metric, title) in enumerate(panels):
      ax = axes[gi, pi]
      for wt, colour in (("sae", "tab:blue"), *colours.items()):
        m = [np.mean([r[metric] for r in rs if r["sparsity"] == S and r["weighting"] == wt])
             for S in Ss]
        sd = [np.std([r[metric] for r in rs if r["sparsity"] == S and r["weighting"] == wt])
              for S in Ss]
        ax.errorbar(range(len(Ss)), m, yerr=sd, marker="o", ms=3, capsize=3, color=colour,
                    label=wt)
      ax.set_xticks(range(len(Ss)), [str(S) for S in Ss])
      ax.set_ylim(bottom=0)
      _style(ax, f"{geo} · {kind}: {title}", metric, gi == pi == 0)
  paths.append(_save(fig, out / "reproduce_fig3_panels.png"))
  return paths


# -- RESULTS.md ---------------------------------------------------------------------------------------

BEGIN, END = "<!-- reproduce:begin -->", "<!-- reproduce:end -->"
SHORT = {"reproduced": "**yes**", "not reproduced": "no", "opposite": "**opposite**"}


def _cell(c) -> str:
  base = max(abs(c["baseline"]), 1e-12)
  return (f"{SHORT[c['verdict']]} {100 * c['mean'] / base:+.1f}% "
          f"[{100 * c['lo'] / base:+.1f}, {100 * c['hi'] / base:+.1f}]")


def results_markdown(result) -> str:
  claims, rows = result["claims"], result["rows"]
  plan = result["plan"]
  lines = [BEGIN, "",
           "## Verdicts: the paper's synthetic claims under every reading "
           "(`python experiments/reproduce.py`)", "",
           f"Generated from `experiments/results/reproduce.json` by the command above "
           f"({result['wall_seconds']:.0f} s wall time on {result['machine']}; "
           f"{len(rows):,} trained SAEs, {len(plan['seeds'])} seeds per cell, paired). Each cell: "
           "verdict, the mean paired difference WSAE − SAE as % of the SAE's value, and its 95% "
           "bootstrap interval; the verdict is read off the interval (**yes** = the interval "
           "lies on the claimed side of 0; **opposite** = on the other side; no = it contains 0). "
           f"\"x_p the same\" is **yes** when the interval lies within ±{SAME_MARGIN:.0%} of the "
           "SAE's value. Training: "
           f"{plan['train']['steps']} Adam steps of batch {plan['train']['batch_size']}, lr "
           f"{plan['train']['learning_rate']}, evaluation on {plan['eval_samples']:,} held-out "
           "samples.", ""]

  # The opening table: the paper's own reading of the weights (γ = Var^1) at its "low S" (0.5),
  # uniform magnitudes, each SAE kind and geometry.
  lows = min(plan["sparsities"])
  lines += [f"### Fig. 3 at S = {lows}, γ = Var¹ (the paper's setting), uniform magnitudes", "",
            "| geometry | SAE | SAE's MCC | " + " | ".join(n for n, *_ in FIG3_CLAIMS) + " |",
            "|---|---|---|" + "---|" * len(FIG3_CLAIMS)]
  for geo in plan["geometries"]:
    for kind in plan["kinds"]:
      for v in sorted({r["variant"] for r in rows if r["geometry"] == geo and r["kind"] == kind}):
        cs = {c["metric"]: c for c in claims if c["figure"] == "Fig. 3" and c["geometry"] == geo
              and c["kind"] == kind and c["variant"] == v and c["magnitude"] == "uniform"
              and c["weighting"] == "var1" and c["sparsity"] == lows}
        if not cs:
          continue
        label = kind + ("" if v == "-" else f" {v}")
        lines.append(f"| {geo} | {label} | {cs['l_gt']['sae_mcc']:.2f} | "
                     + " | ".join(_cell(cs[m]) for _, m, *_ in FIG3_CLAIMS) + " |")
  lines += [""]

  # Counts over every reading.
  lines += ["### Every reading, counted", "",
            "Verdict counts over all geometries × magnitudes × SAE kinds and variants × S; "
            "\"where recovery is possible\" keeps the readings whose plain SAE reaches "
            f"MCC ≥ {RECOVERY_MCC} (elsewhere no weighting can be judged).", "",
            "| claim | weighting | all readings: yes / no / opposite | recovery possible: yes / no / opposite |",
            "|---|---|---|---|"]
  for name, metric, *_ in FIG3_CLAIMS:
    for wt in WEIGHTINGS[1:]:
      cs = [c for c in claims if c["figure"] == "Fig. 3" and c["metric"] == metric
            and c["weighting"] == wt]
      rec = [c for c in cs if c["recovery_possible"]]
      count = lambda xs: " / ".join(str(sum(c["verdict"] == v for c in xs)) for v in stats.VERDICTS)
      lines.append(f"| {name} | {wt} | {count(cs)} | {count(rec)} |")
  lines += [""]

  # Fig. 2.
  lines += ["### Fig. 2: does features-per-latent fall from the lowest to the highest S? (plain SAE)",
            "", "Cell: verdict, change in the count from S = "
            f"{min(plan['sparsities'])} to {max(plan['sparsities'])} as % of the count at "
            f"{min(plan['sparsities'])}, 95% interval; uniform magnitudes.", "",
            "| geometry | SAE | " + " | ".join(rule for _, rule in FIG2_RULES) + " |",
            "|---|---|" + "---|" * len(FIG2_RULES)]
  for geo in plan["geometries"]:
    for kind in plan["kinds"]:
      for v in sorted({r["variant"] for r in rows if r["geometry"] == geo and r["kind"] == kind}):
        cs = {c["metric"]: c for c in claims if c["figure"] == "Fig. 2" and c["geometry"] == geo
              and c["kind"] == kind and c["variant"] == v and c["magnitude"] == "uniform"}
        if cs:
          label = kind + ("" if v == "-" else f" {v}")
          lines.append(f"| {geo} | {label} | "
                       + " | ".join(_cell(cs[m]) for m, _ in FIG2_RULES) + " |")
  lines += ["", "![Fig. 2](results/reproduce_fig2.png)", "",
            "![Fig. 3 as paired differences](results/reproduce_fig3.png)", "",
            "![Fig. 3 panels](results/reproduce_fig3_panels.png)", "", END]
  return "\n".join(lines)


def write_results_md(result, path: pathlib.Path = RESULTS_MD) -> None:
  text = path.read_text() if path.exists() else ""
  block = results_markdown(result)
  if BEGIN in text and END in text:
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
  else:
    head, sep, rest = text.partition("\n\n")
    text = f"{head}{sep}{block}\n\n{rest}"
  path.write_text(text)


# -- main ---------------------------------------------------------------------------------------------

def machine() -> str:
  try:
    model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if "model name" in l)
  except (OSError, StopIteration):
    model = "unknown CPU"
  import os
  return f"{os.cpu_count()} cores, {model}, JAX {jax.__version__} {jax.default_backend()}"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny grid for CI (well under 2 minutes)")
  p.add_argument("--out", default=str(OUT), help="output folder")
  p.add_argument("--no-results-md", action="store_true",
                 help="do not rewrite experiments/RESULTS.md (implied by --smoke or --out)")
  p.add_argument("--no-progress", action="store_true")
  a = p.parse_args(argv)
  plan = SMOKE if a.smoke else FULL
  out = pathlib.Path(a.out)
  w._validate.check_writable_dir(out, "--out")
  t0 = time.perf_counter()
  rows, train_seconds = [], 0.0
  Ws = {}
  for geo in plan.geometries:
    Ws[geo] = geometry(geo, plan.toy_steps)
    for magnitude in plan.magnitudes[geo]:
      for kind in plan.kinds:
        t = time.perf_counter()
        cell_rows, secs = run_cell(geo, Ws[geo], magnitude, kind, plan, not a.no_progress)
        rows += cell_rows
        train_seconds += secs
        print(f"{geo:>9} {magnitude:>11} {kind:>11}: {len(cell_rows):4d} SAEs in "
              f"{time.perf_counter() - t:6.1f} s", flush=True)
  claims = analyse(rows)
  result = {
      "command": " ".join(["python", "experiments/reproduce.py", *(argv or sys.argv[1:])]),
      "machine": machine(), "wall_seconds": None, "train_seconds": train_seconds,
      "plan": {**dataclasses.asdict(plan), "train": dataclasses.asdict(plan.train),
               "weightings": list(WEIGHTINGS), "tau_relative": TAU_RELATIVE,
               "tau_data": TAU_DATA, "same_margin": SAME_MARGIN, "recovery_mcc": RECOVERY_MCC},
      "geometries": {g: {"W_p": W.tolist(), "participation_ratio": participation_ratio(W).tolist()}
                     for g, W in Ws.items()},
      "rows": rows, "claims": claims,
  }
  result["wall_seconds"] = time.perf_counter() - t0
  (out / "reproduce.json").write_text(json.dumps(result, indent=1, default=float))
  figs = plot(result, out)
  if not (a.smoke or a.no_results_md or out.resolve() != OUT.resolve()):
    write_results_md(result)
  counts = {v: sum(c["verdict"] == v for c in claims) for v in stats.VERDICTS}
  print(f"{len(rows)} SAEs, {len(claims)} claim × reading verdicts {counts}; wrote "
        f"{out / 'reproduce.json'} and {', '.join(f.name for f in figs)} in "
        f"{result['wall_seconds']:.0f} s")
  return result


if __name__ == "__main__":
  main()
