"""SynthSAEBench as one program: {relu, topk, batchtopk, jumprelu, matryoshka} × L0 × seeds, each
architecture's members trained together as one compiled sweep, scored by SynthSAEBench's metrics.

    python experiments/synthbench.py                    # the CPU plan (~25 min on 2 CPU cores)
    python experiments/synthbench.py --saelens          # + SAELens's runner side by side
    python experiments/synthbench.py --plan gpu         # SynthSAEBench-16k, the published setting
    python experiments/synthbench.py --smoke            # a tiny grid (CI runs it)

Ground truth: SAELens's own `SyntheticModel` built from the plan's config (`--truth saelens`, the
default when sae-lens is installed) read with `data.synthbench.law_from_saelens`, so SAELens's runner
and this grid train on one model; `--truth ours` builds it with `data.synthbench.build_law`
(no sae-lens needed; the same law, its own draws). Every SAE of a plan sees the same batches
(`SynthBenchSource`, seed 0) and is scored on the same held-out rows (steps 10⁸ …): seeds differ
in the SAE's initialisation, so differences between architectures are paired by seed.

Plans: "cpu" is SynthSAEBench-16k's construction at 2,048 features in 128 dimensions
(`SYNTHBENCH_CPU`), SAEs of width 512 (the 16k benchmark's features : width ratio of 4), batch
1,024, Adam lr 1e-3, 800 steps (0.82M samples); L0 targets 4, 8, 12, 16 (the data's L0 over its
512 most frequent features is 8.3); 3 seeds; 32,768 held-out rows. The coefficient paths were
set by a calibration run of seed 0 at 1,000 steps (ReLU + L1: λ 3 → L0 25, 9 → 8, 13 → 0.8).
JumpReLU could not be calibrated at this budget: its L0 stayed at 93 for every λ from 10 to
1,000 (its threshold, initialised at 0.01, moves by about the learning rate per step), and an
initial threshold of 1 left 418 of 512 latents dead; the plan keeps two of its λ to show it. "gpu" is the published setting: SynthSAEBench-16k
(768 dims, 16,384 features), width 4,096, batch 1,024, lr 3e-4, 200M samples, L0 15 … 35.

Matched L0 (held-out L0, as SynthSAEBench's evaluator measures it): the Top-k family trains one
member per target k, the ReLU + L1 and JumpReLU SAEs a path of their coefficient; each metric is
interpolated, per seed, on log L0 between the two members around a target. No extrapolation: past
the members' range only a member whose k is the target and whose measured L0 is within 10% of it
counts (BatchTopK and Matryoshka infer with a learned threshold), else the cell is left empty.

Readings fixed before the run (this docstring is committed before any full run's numbers):
  * Primary, per pair of architectures: the paired difference of F1 at the plan's middle L0 target
    (cpu: 8, the data's own L0 over the width; gpu: 25, the published reading), the median over
    seeds with its order-statistic interval (`stats.paired_interval`) and an exact sign test,
    Holm-adjusted over the 10 pairs. With 3 seeds the interval is [min, max] with coverage 75% and
    no sign test can go below p = 0.25: the plan reports the sign of each difference and its
    spread, and cannot declare one architecture better at 5%. MCC the same way, as secondary.
  * The published table (SynthSAEBench's mean ± sd over seeds of F1, MCC, uniqueness and
    explained variance at each L0 target), and F1 / MCC against L0 per architecture (figure).

Beside SynthSAEBench's metrics each row carries this library's own ground-truth readings on the
first 8,192 of the held-out rows (`gt_l_gt`, `gt_mcc` by signed correlation, `gt_mmcs`, `gt_shrinkage`; not in
the run of 2026-12-07, whose JSON predates them).

Writes `synthbench.json` (every SAE's scores, the matched table, the comparisons, wall times,
and with `--saelens` SAELens's runner on the same model, rows and settings, scored by SAELens's
own evaluator on the grid's held-out rows) and `synthbench.png`.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import pathlib
import sys
import time

import jax
import numpy as np

import wsae_jax as w
from wsae_jax.data import synthbench as sb
from wsae_jax.evaluation import stats
from wsae_jax.evaluation import synthbench as ev
from wsae_jax.training import sweep

ROOT = pathlib.Path(__file__).resolve().parent
ARCHS = ("relu", "topk", "batchtopk", "jumprelu", "matryoshka")
METRICS = ("f1_score", "mcc", "uniqueness", "explained_variance", "precision", "recall")
EVAL_STEP = 10**8

SMOKE_MODEL = dataclasses.replace(
  sb.SYNTHBENCH_CPU,
  num_features=256,
  hidden_dim=32,
  hierarchy={**(sb.SYNTHBENCH_CPU.hierarchy or {}), "total_root_nodes": 4, "max_depth": 2},
  orthogonalization={"num_steps": 10, "lr": 3e-4},
  correlation={"rank": 4, "correlation_scale": 0.1},
)

PLANS = {
  "smoke": dict(
    model=SMOKE_MODEL,
    d_sae=64,
    batch=256,
    steps=60,
    lr=1e-3,
    seeds=2,
    l0=(4, 8),
    relu=(1.0, 3.0, 10.0),
    jumprelu=(0.1, 0.3, 1.0),
    eval_samples=4096,
  ),
  "cpu": dict(
    model=sb.SYNTHBENCH_CPU,
    d_sae=512,
    batch=1024,
    steps=800,
    lr=1e-3,
    seeds=3,
    l0=(4, 8, 12, 16),
    relu=(5.0, 6.5, 8.0, 9.5, 11.0, 12.5),
    jumprelu=(1.0, 30.0),
    eval_samples=32_768,
  ),
  "gpu": dict(
    model=sb.SYNTHBENCH_16K,
    d_sae=4096,
    batch=1024,
    steps=195_313,
    lr=3e-4,
    seeds=3,
    l0=(15, 20, 25, 30, 35),
    relu=(1.0, 2.0, 4.0, 8.0, 16.0),
    jumprelu=(0.05, 0.1, 0.2, 0.4, 0.8),
    eval_samples=500_000,
  ),
}


def parse(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--plan", choices=tuple(PLANS), default="cpu")
  p.add_argument("--smoke", action="store_true", help="the tiny plan (same as --plan smoke)")
  p.add_argument("--truth", choices=("saelens", "ours"), default=None)
  p.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
  p.add_argument("--saelens", action="store_true", help="also train SAELens's runner (seed 0)")
  p.add_argument("--steps", type=int, help="override the plan's training steps (a budget)")
  p.add_argument("--out", default=str(ROOT / "results"))
  p.add_argument("--no-progress", action="store_true")
  p.add_argument(
    "--rescore",
    metavar="JSON",
    help="re-derive the table, comparisons and synthbench.md from a synthbench.json's rows",
  )
  args = p.parse_args(argv)
  if args.smoke:
    args.plan = "smoke"
  if args.truth is None:
    try:
      import sae_lens  # noqa: F401

      args.truth = "saelens"
    except ImportError:
      args.truth = "ours"
  if args.saelens and args.truth != "saelens":
    p.error("--saelens needs --truth saelens (both libraries must train on one model)")
  return args


def ground_truth(plan, truth):
  """The law, and SAELens's model when it is the source of truth."""
  if truth == "ours":
    return sb.build_law(plan["model"]), None
  from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig

  model = SyntheticModel(SyntheticModelConfig.from_dict(plan["model"].to_dict()))
  return sb.law_from_saelens(model), model


def arch_sweep(arch, plan, d_in):
  """(config, members) of one architecture: k = each L0 target, or its coefficient path."""
  seeds = range(plan["seeds"])
  d_sae = plan["d_sae"]
  if arch in ("relu", "jumprelu"):
    key = {"relu": "l1_coefficient", "jumprelu": "l0_coefficient"}[arch]
    cfg = (w.ReLUSAEConfig if arch == "relu" else w.JumpReLUSAEConfig)(d_in=d_in, d_sae=d_sae)
    return cfg, [{key: v, "seed": s} for s, v in itertools.product(seeds, plan[arch])]
  cls = {
    "topk": w.TopKSAEConfig,
    "batchtopk": w.BatchTopKSAEConfig,
    "matryoshka": w.MatryoshkaBatchTopKSAEConfig,
  }[arch]
  cfg = cls(d_in=d_in, d_sae=d_sae, k=max(plan["l0"]))
  return cfg, [{"k": k, "seed": s} for s, k in itertools.product(seeds, plan["l0"])]


def eval_batch(plan) -> int:
  """Held-out rows drawn per step: the grid and SAELens's side must draw them the same way."""
  return min(8192, plan["eval_samples"])


def run_grid(plan, law, archs, progress):
  """Trains each architecture's members as one sweep and scores every SAE on the held-out rows."""
  src = sb.SynthBenchSource(law, plan["batch"], seed=0)
  tc = w.TrainConfig(
    steps=plan["steps"],
    learning_rate=plan["lr"],
    batch_size=plan["batch"],
    log_every=50,
    warmup_steps=min(100, plan["steps"] // 8),
  )
  rows, seconds = [], {}
  b = eval_batch(plan)  # our own readings: the first batch of held-out rows
  _, f_gt = next(ev.held_out_batches(src, plan["eval_samples"], step0=EVAL_STEP, batch_size=b))
  for arch in archs:
    cfg, members = arch_sweep(arch, plan, law.hidden_dim)
    t0 = time.perf_counter()
    res = sweep.train_sweep(cfg, tc, members, src, progress=progress and f"synthbench {arch}")
    seconds[arch] = {"train": time.perf_counter() - t0, "members": len(members)}
    t0 = time.perf_counter()
    for i, m in enumerate(members):
      s = ev.evaluate_synthbench(
        res.member_config(i),
        res.params(i),
        src,
        num_samples=plan["eval_samples"],
        batch_size=b,
        step0=EVAL_STEP,
      )
      gt = ev.ground_truth_readings(res.member_config(i), res.params(i), law, f_gt)
      setting = {k: v for k, v in m.items() if k != "seed"}
      rows.append({"arch": arch, "seed": m["seed"], **setting, **s.to_dict()})
      rows[-1].update(rows[-1].pop("classification"))
      rows[-1].update({f"gt_{k}": gt[k] for k in ("l_gt", "mcc", "mmcs", "shrinkage")})
    seconds[arch]["score"] = time.perf_counter() - t0
    print(f"{arch}: {len(members)} SAEs in {seconds[arch]['train']:.0f} s", flush=True)
  return rows, seconds


def at_l0(rows, arch, seed, target, metric) -> float:
  """`metric` of `arch` / `seed` at held-out L0 `target`: linear interpolation on log L0 between
  the two members around it. Outside the members' range, the member with k = target when its
  measured L0 is within 10% of it (BatchTopK and Matryoshka infer with a learned threshold, so
  their L0 is near k, not k), else NaN: never an extrapolation. Top-k's L0 is k exactly."""
  mine = [r for r in rows if r["arch"] == arch and r["seed"] == seed]
  pts = sorted((r["sae_l0"], r[metric]) for r in mine)
  if not pts:
    return float("nan")
  l0 = np.log(np.maximum([p[0] for p in pts], 1e-9))
  val = np.asarray([p[1] for p in pts])
  t = np.log(target)
  if l0[0] - 1e-9 <= t <= l0[-1] + 1e-9:
    return float(np.interp(t, l0, val))
  near = [r[metric] for r in mine if r.get("k") == target and abs(r["sae_l0"] / target - 1) <= 0.1]
  return float(near[0]) if near else float("nan")


def matched_table(rows, plan, archs) -> list[dict]:
  """Per architecture and L0 target: each metric per seed, mean ± sd (SynthSAEBench's table)."""
  out = []
  for arch, target in itertools.product(archs, plan["l0"]):
    cell = {"arch": arch, "l0": target}
    for metric in (*METRICS, "sae_l0"):
      per_seed = [at_l0(rows, arch, s, target, metric) for s in range(plan["seeds"])]
      v = np.asarray(per_seed)
      ok = v[np.isfinite(v)]
      cell[metric] = {
        "per_seed": per_seed,
        "mean": float(ok.mean()) if ok.size else None,
        "sd": float(ok.std(ddof=1)) if ok.size > 1 else None,
      }
    out.append(cell)
  return out


def comparisons(table, plan, archs) -> list[dict]:
  """The primary reading (F1) and the secondary (MCC): every pair at the middle L0 target, paired
  by seed, Holm-adjusted over the pairs."""
  target = plan["l0"][(len(plan["l0"]) - 1) // 2]
  cell = {(c["arch"], c["l0"]): c for c in table}
  out = []
  for metric, role in (("f1_score", "primary"), ("mcc", "secondary")):
    pairs = []
    for a, b in itertools.combinations(archs, 2):
      d = np.subtract(cell[a, target][metric]["per_seed"], cell[b, target][metric]["per_seed"])
      iv = stats.paired_interval(d)
      pairs.append({"metric": metric, "role": role, "a": a, "b": b, "l0": target, **iv.as_dict()})
    for p, adj in zip(pairs, stats.holm([p["p_value"] for p in pairs])):
      p["p_holm"] = float(adj)
    out += pairs
  return out


def eval_features(plan, law) -> np.ndarray:
  """The features of the held-out rows every SAE is scored on (steps 10⁸ …: the rows
  `run_grid`'s `evaluate_synthbench` draws), for SAELens's evaluator, which builds the hidden
  activations from them with its own dictionary."""
  src = sb.SynthBenchSource(law, plan["batch"], seed=0)
  parts = ev.held_out_batches(
    src, plan["eval_samples"], step0=EVAL_STEP, batch_size=eval_batch(plan)
  )
  return np.concatenate([np.asarray(f) for _, f in parts])


def saelens_config(arch, setting, plan, d_in):
  """SAELens's training config of the same SAE (its defaults otherwise, as ours)."""
  from sae_lens import (
    BatchTopKTrainingSAEConfig,
    JumpReLUTrainingSAEConfig,
    MatryoshkaBatchTopKTrainingSAEConfig,
    StandardTrainingSAEConfig,
    TopKTrainingSAEConfig,
  )

  d = {"d_in": d_in, "d_sae": plan["d_sae"]}
  if arch == "relu":
    return StandardTrainingSAEConfig(**d, l1_coefficient=setting["l1_coefficient"])
  if arch == "jumprelu":
    return JumpReLUTrainingSAEConfig(**d, l0_coefficient=setting["l0_coefficient"])
  if arch == "topk":
    return TopKTrainingSAEConfig(**d, k=int(setting["k"]))
  if arch == "batchtopk":
    return BatchTopKTrainingSAEConfig(**d, k=float(setting["k"]))
  widths = list(w.MatryoshkaBatchTopKSAEConfig(d_in=d_in, d_sae=plan["d_sae"]).levels)
  return MatryoshkaBatchTopKTrainingSAEConfig(**d, k=float(setting["k"]), matryoshka_widths=widths)


def run_saelens(plan, model, law, archs, f_eval):
  """SAELens's `SyntheticSAERunner` on the same model, settings and samples count, one SAE after
  another (seed 0 of each setting), scored by SAELens's evaluator on the grid's held-out rows."""
  import torch
  from sae_lens import LoggingConfig
  from sae_lens.synthetic import SyntheticSAERunner, SyntheticSAERunnerConfig

  rows, seconds = [], {}
  for arch in archs:
    _, members = arch_sweep(arch, plan, law.hidden_dim)
    t0 = time.perf_counter()
    mine = [m for m in members if m["seed"] == 0]
    for m in mine:
      setting = {k: v for k, v in m.items() if k != "seed"}
      torch.manual_seed(0)
      cfg = SyntheticSAERunnerConfig(
        synthetic_model=model.cfg,
        sae=saelens_config(arch, setting, plan, law.hidden_dim),
        training_samples=plan["steps"] * plan["batch"],
        batch_size=plan["batch"],
        lr=plan["lr"],
        device="cpu",
        output_path=None,
        checkpoint_path=None,
        eval_samples=0,
        run_final_eval=False,
        logger=LoggingConfig(log_to_wandb=False),
      )
      sae = SyntheticSAERunner(cfg, override_synthetic_model=model).run().sae
      s = saelens_scores(sae, model, f_eval)
      rows.append({"arch": arch, "seed": 0, **setting, **s})
    seconds[arch] = {"train_and_score": time.perf_counter() - t0, "saes": len(mine)}
    print(f"SAELens {arch}: {seconds[arch]['train_and_score']:.0f} s", flush=True)
  return rows, seconds


def saelens_scores(sae, model, f_eval) -> dict:
  """SAELens's `eval_sae_on_synthetic_data` on the given rows (its generator replaced by them)."""
  import torch
  from sae_lens.synthetic import eval_sae_on_synthetic_data

  class Rows:
    i = 0

    def sample(self, b):
      out = torch.tensor(f_eval[self.i : self.i + b])
      self.i += b
      return out

  r = eval_sae_on_synthetic_data(
    sae, model.feature_dict, Rows(), num_samples=len(f_eval), batch_size=8192
  ).to_dict()
  r.update(r.pop("classification"))
  return r


def _cell(c, metric) -> str:
  m = c[metric]
  if m["mean"] is None:
    return "–"
  return f"{m['mean']:.3f} ± {m['sd']:.3f}" if m["sd"] is not None else f"{m['mean']:.3f}"


def _saelens_at(rows, arch, target, metric) -> float:
  return at_l0(rows, arch, 0, target, metric)


def render(result: dict) -> str:
  """The Markdown of RESULTS.md's SynthSAEBench section, from `synthbench.json` alone."""
  lines = [
    "| SAE | L0 target | L0 measured | F1 | MCC | uniqueness | var. explained |",
    "|---|---|---|---|---|---|---|",
  ]
  for c in result["table"]:
    cols = ("sae_l0", "f1_score", "mcc", "uniqueness", "explained_variance")
    cells = [_cell(c, m) for m in cols]
    lines.append(f"| {c['arch']} | {c['l0']} | " + " | ".join(cells) + " |")
  lines += [
    "",
    "| reading | pair | median diff | [lo, hi] (coverage) | p (Holm) |",
    "|---|---|---|---|---|",
  ]
  for p in result["comparisons"]:
    if p["n"] == 0:
      lines.append(
        f"| {p['metric']} ({p['role']}) | {p['a']} − {p['b']} | – | no seed has both | – |"
      )
      continue
    lines.append(
      f"| {p['metric']} ({p['role']}) | {p['a']} − {p['b']} | {p['median']:+.3f} | "
      f"[{p['lo']:+.3f}, {p['hi']:+.3f}] ({p['coverage']:.0%}) | {p['p_holm']:.2f} |"
    )
  if "saelens" in result:
    ours = [r for r in result["rows"] if r["seed"] == 0]
    theirs = result["saelens"]["rows"]
    lines += [
      "",
      "| SAE | L0 | F1 here / SAELens | MCC here / SAELens | var. expl. here / SAELens |",
      "|---|---|---|---|---|",
    ]
    for arch in dict.fromkeys(r["arch"] for r in theirs):
      for t in result["settings"]["l0"]:
        vals = [
          (_saelens_at(ours, arch, t, m), _saelens_at(theirs, arch, t, m))
          for m in ("f1_score", "mcc", "explained_variance")
        ]
        text = [f"{a:.3f} / {b:.3f}".replace("nan", "–") for a, b in vals]
        lines.append(f"| {arch} | {t} | " + " | ".join(text) + " |")
    sp = result["speed"]
    lines += [
      "",
      "| SAE | SAEs | here (s) | SAELens (s, estimated) | ratio |",
      "|---|---|---|---|---|",
    ]
    for arch, a in sp["per_arch"].items():
      lines.append(
        f"| {arch} | {a['saes']} | {a['ours_s']:.0f} | {a['saelens_s_estimated']:.0f} | "
        f"{a['ratio']:.1f}× |"
      )
    lines.append(
      f"| all | | {sp['ours_s']:.0f} | {sp['saelens_s_estimated']:.0f} | {sp['ratio']:.1f}× |"
    )
  return "\n".join(lines) + "\n"


def figure(rows, archs, out: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, metric in zip(axes, ("f1_score", "mcc")):
    for arch in archs:
      pts = sorted((r["sae_l0"], r[metric]) for r in rows if r["arch"] == arch)
      ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", ms=3, label=arch, alpha=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("L0 (held-out)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.suptitle("SynthSAEBench: every SAE of the grid (each point one SAE and seed)")
  fig.tight_layout()
  fig.savefig(out, dpi=120)
  plt.close(fig)


def speed(result: dict) -> dict | None:
  """The whole grid here against SAELens training the same SAEs one after another: SAELens's
  measured seconds per SAE (train + score, seed 0 of every setting) times the grid's SAE count,
  per architecture; ours is the grid's own train + score time."""
  if "saelens" not in result:
    return None
  per_arch = {}
  for arch, s in result["saelens"]["seconds"].items():
    ours = result["seconds"][arch]
    theirs = s["train_and_score"] / s["saes"] * ours["members"]
    per_arch[arch] = {
      "saes": ours["members"],
      "ours_s": ours["train"] + ours["score"],
      "saelens_s_estimated": theirs,
      "saelens_s_per_sae": s["train_and_score"] / s["saes"],
      "ratio": theirs / (ours["train"] + ours["score"]),
    }
  ours_total = sum(a["ours_s"] for a in per_arch.values())
  theirs_total = sum(a["saelens_s_estimated"] for a in per_arch.values())
  return {
    "per_arch": per_arch,
    "ours_s": ours_total,
    "saelens_s_estimated": theirs_total,
    "ratio": theirs_total / ours_total,
  }


def rescore(path: pathlib.Path) -> dict:
  """Recomputes everything derived from a result's rows (in place, beside it)."""
  result = json.loads(path.read_text())
  plan = {**PLANS[result["plan"]], **result["settings"]}
  archs = list(dict.fromkeys(r["arch"] for r in result["rows"]))
  result["table"] = matched_table(result["rows"], plan, archs)
  result["comparisons"] = comparisons(result["table"], plan, archs)
  result["speed"] = speed(result)
  path.write_text(json.dumps(result, indent=1, default=float))
  (path.parent / "synthbench.md").write_text(render(json.loads(path.read_text())))
  return result


def main(argv=None):
  args = parse(argv)
  if args.rescore:
    return rescore(pathlib.Path(args.rescore))
  plan = dict(PLANS[args.plan])
  if args.steps:
    plan["steps"] = args.steps
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  t_all = time.perf_counter()
  law, model = ground_truth(plan, args.truth)
  rows, seconds = run_grid(plan, law, args.archs, not args.no_progress)
  grid_seconds = time.perf_counter() - t_all
  table = matched_table(rows, plan, args.archs)
  result = {
    "plan": args.plan,
    "settings": {k: v for k, v in plan.items() if k != "model"},
    "model": plan["model"].to_dict(),
    "truth": args.truth,
    "law_sha1": law.fingerprint(),
    "jax": jax.__version__,
    "devices": [str(d) for d in jax.devices()],
    "rows": rows,
    "table": table,
    "comparisons": comparisons(table, plan, args.archs),
    "seconds": seconds,
    "grid_wall_seconds": grid_seconds,
  }
  if args.saelens:
    f_eval = eval_features(plan, law)
    s_rows, s_seconds = run_saelens(plan, model, law, args.archs, f_eval)
    result["saelens"] = {"rows": s_rows, "seconds": s_seconds}
    result["speed"] = speed(result)
  (out / "synthbench.json").write_text(json.dumps(result, indent=1, default=float))
  (out / "synthbench.md").write_text(render(json.loads((out / "synthbench.json").read_text())))
  figure(rows, args.archs, out / "synthbench.png")
  print(f"wrote {out / 'synthbench.json'} ({grid_seconds:.0f} s for the grid)", flush=True)
  return result


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
