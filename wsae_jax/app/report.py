"""`wsae report`: one self-contained HTML page about a run, a SAELens folder or a sweep.

The page is `report_page/page.html` with its stylesheet, its script (plain JavaScript written for
this page: no library, no CDN, nothing fetched) and the report's data inlined. Charts are SVG
drawn by the script; per-latent panels are built only when a latent is opened, from compact
arrays (little-endian, base64) decoded on demand, so a 4,608-latent page stays small and opens
fast. No library was vendored: the page needs a table, a few SVG charts and text shading, which a
few hundred lines do without a dependency to keep up to date.

What it shows:
  * every report: the configuration, the metrics (the run's `eval.json` when there is one), and
    for a run its loss / L0 / dead-fraction curves and γ per dimension with its `GammaReport`;
  * with activations (`--activations STORE`, the last `--eval-shards` shards) or a synthetic run:
    the firing-frequency histogram and a sortable, searchable table of latents (frequency, mean
    and max activation, top tokens, k-sparse-probe classes and absorption letters from
    `eval.json`); opening a latent shows its decoder neighbours and, on a store, its top contexts
    and three activation bands (tokens shaded by the latent's activation);
  * synthetic runs: each latent's matched true feature and the closed form against the trained
    encoder (`theory.closed_form.compare`);
  * sweeps: the members in (L0, MSE) with the Pareto front (hover for a member's values) and the
    members' table.
"""

from __future__ import annotations

import base64
import html
import json
import pathlib
from typing import Any

import numpy as np

from wsae_jax import _validate as V

PAGE = pathlib.Path(__file__).with_name("report_page")
BEFORE, AFTER = 12, 4  # tokens shown before / after an example's token


def _b64(a, dtype) -> str:
  return base64.b64encode(
    np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
  ).decode("ascii")


def _num(v, digits: int = 6):
  v = float(v)
  return None if not np.isfinite(v) else float(f"{v:.{digits}g}")


def _round(a, digits: int = 5) -> list:
  return [_num(v, digits) for v in np.asarray(a, np.float64).ravel()]


# -- reading what the report is about ------------------------------------------------------------


def _read_json(path):
  try:
    return json.loads(pathlib.Path(path).read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise V.WSAEInputError(f"{path} cannot be read ({e}).") from None


def _history(history: dict | None) -> dict | None:
  """The curves of a run's history.json content (`workdir.OpenedRun.history`)."""
  records = (history or {}).get("records", [])
  if not records:
    return None
  keys = [k for k in ("loss", "mse", "fvu", "l0", "dead_frac") if k in records[0]]
  return {
    "step": [r["step"] for r in records],
    **{k: [_num(r.get(k, np.nan)) for r in records] for k in keys},
  }


def _gamma(g, described: dict | None) -> dict | None:
  """γ's panel: `g` the fixed γ or a re-estimated one's newest value, `described` its schedule."""
  from wsae_jax.objectives import weights

  if g is None:
    return {"description": described} if described else None
  rep = weights.gamma_report(np.asarray(g, np.float64))
  return {
    "values": _round(g),
    "description": described,
    "summary": rep.summary(),
    "top_dim": int(rep.top_dim),
    "top_share": _num(rep.top_share),
    "effective_dims": _num(rep.effective_dims),
  }


def _latent_table(cfg, params, codes, tokens=None, strings=None) -> dict:
  from wsae_jax import models
  from wsae_jax.evaluation import features

  _, lat, val = codes
  st = features.latent_stats(lat, val, cfg.d_sae, tokens)
  ids, cos = features.decoder_neighbours(np.asarray(models.decoder_matrix(cfg, params)))
  hist = features.activation_histograms(lat, val, cfg.d_sae, bins=HIST_BINS)
  table = {
    "frequency": _round(st["frequency"], 4),
    "mean": _round(st["mean"], 4),
    "max": _round(st["max"], 4),
    "count": st["count"].tolist(),
    "act_hist": _b64(hist, "<u4"),
    "act_hist_bins": HIST_BINS,
    "neighbours": _b64(ids, "<i4"),
    "neighbour_cos": _b64(np.round(cos * 127), "i1"),
    "k_neighbours": int(ids.shape[1]),
  }
  if tokens is not None:
    words = []
    for row_ids, row_n in zip(st["top_tokens"], st["top_token_counts"]):
      words.append(
        [[_token_text(strings, int(t)), int(n)] for t, n in zip(row_ids, row_n) if t >= 0]
      )
    table["top_tokens"] = words
  return table


def _token_text(strings, t: int) -> str:
  return strings[t] if strings is not None and t in strings else f"#{t}"


def _label_tags(d_sae: int, eval_result: dict | None) -> dict:
  """Per latent, the token classes it probes (k-sparse selections) and the letters it is a main
  latent for or absorbs, from `wsae eval --probe`'s eval.json."""
  probe: list[list] = [[] for _ in range(d_sae)]
  absorb: list[list] = [[] for _ in range(d_sae)]
  for name, e in (eval_result or {}).get("probing", {}).items():
    for j in e.get("latents", {}).get("1", []):
      probe[j].append(f"{name} (F1 {e['k']['1']:.2f})")
  for letter, e in (eval_result or {}).get("absorption", {}).items():
    for j, f1 in zip(e.get("main_latents", []), e.get("main_f1", [])):
      absorb[j].append(f"{letter} main (F1 {f1:.2f})")
    for j, n in e.get("absorbing_latents", {}).items():
      absorb[int(j)].append(f"absorbs {letter} ×{n}")
  return {"probe": [", ".join(p) for p in probe], "absorption": [", ".join(a) for a in absorb]}


def _contexts(codes, tokens, context_len: int, strings, d_sae: int) -> dict:
  from wsae_jax.evaluation import features

  _, lat, val = codes
  first = np.arange(len(lat)) % context_len == 0  # each context's first token: not an example
  rows, band = features.examples(lat, val, d_sae, exclude_B=first)
  acts = features.windows(lat, val, rows, context_len=context_len, before=BEFORE, after=AFTER)
  peak = np.maximum(acts.max(axis=(1, 2)), 1e-12)
  q = np.clip(np.round(255 * acts / peak[:, None, None]), 0, 255)
  used = np.unique(tokens)
  return {
    "context_len": int(context_len),
    "before": BEFORE,
    "after": AFTER,
    "examples": int(rows.shape[1]),
    "n_bands": features.BANDS,
    "tokens": _b64(tokens, "<u4"),
    "vocab": {str(int(t)): _token_text(strings, int(t)) for t in used},
    "rows": _b64(rows, "<i4"),
    "bands": _b64(band, "i1"),
    "acts": _b64(q, "u1"),
    "peak": _round(peak, 4),
    "decoded": strings is not None,
  }


MIN_CLASS_ROWS = 20
"""Token classes with fewer counted rows are left out of the per-class densities."""


def _class_density(latents_BxK, tokens_B, strings, d_sae: int) -> dict | None:
  """Per latent, how often it fires on the rows of each token class of `wsae eval --probe`
  (`evaluation.probing.TOKEN_CLASSES`): `density (d_sae, C)`, with each class's row count."""
  from wsae_jax.evaluation import probing

  lat = np.asarray(latents_BxK)
  names, rows, cols = [], [], []
  for name, ids in probing.token_classes(strings).items():
    mask = np.isin(tokens_B, np.fromiter(ids, np.int64, len(ids)))
    if mask.sum() < MIN_CLASS_ROWS:
      continue
    sel = lat[mask]
    cols.append(np.bincount(sel[sel >= 0], minlength=d_sae) / mask.sum())
    names.append(name)
    rows.append(int(mask.sum()))
  if not names:
    return None
  return {
    "names": names,
    "rows": rows,
    "density": _b64(np.stack(cols, axis=1).astype(np.float32), "<f4"),
  }


def _logit_effects(cfg, params, store, model) -> dict:
  """`--logit-effects`: per latent the 10 tokens its decoder direction most promotes and
  suppresses through the store's LM (`lm.scoring.logit_effects`)."""
  from wsae_jax import models
  from wsae_jax.lm import harvest as hv
  from wsae_jax.lm import scoring as lm_scoring

  path = hv.store_model_path(store.metadata, model)
  lm, _ = hv.load_model(path, tokenizer=False)
  W_U, norm, formula = lm_scoring.unembedding(lm)
  if W_U.shape[1] != cfg.d_in:
    raise V.WSAEInputError(
      f"the LM's unembedding has d_model={W_U.shape[1]}, the SAE d_in="
      f"{cfg.d_in}: --logit-effects needs the LM the store was harvested "
      f"from (--model)."
    )
  e = lm_scoring.logit_effects(np.asarray(models.decoder_matrix(cfg, params)), W_U, norm)
  used = np.unique(np.concatenate([e["promote_ids"].ravel(), e["suppress_ids"].ravel()]))
  return {
    "formula": formula,
    "k": int(e["promote_ids"].shape[1]),
    "vocab": _tokenizer_strings(store, model, used)[0] or {},
    **{n: _b64(e[n], "<i4" if n.endswith("ids") else "<f4") for n in e},
  }


def _tokenizer_strings(store, model, tokens):
  """Decoded token strings via the store's LM tokenizer (the `harvest` extra), or None."""
  try:
    from wsae_jax.lm import harvest as hv
    from wsae_jax.lm import scoring as lm_scoring

    path = hv.store_model_path(store.metadata, model)
    return lm_scoring.token_strings(hv.load_tokenizer(path), tokens), None
  except (ImportError, V.WSAEInputError, OSError, ValueError) as e:
    return None, f"token ids shown undecoded: {e}"


HIST_BINS = 20
"""Bins of each latent's activation histogram (0 to its maximum)."""
STAGES = (
  "loading the SAE",
  "reading activations",
  "encoding",
  "scoring",
  "latent table",
  "contexts",
  "logit effects",
)
"""What `run_report` reports to its `stage` callback, in order (from the second with
activations; the last with `logit_effects`)."""


def run_report(
  run,
  *,
  activations=None,
  eval_shards: int = 2,
  max_rows: int | None = None,
  model=None,
  stage=None,
  logit_effects: bool = False,
) -> dict:
  """The data of the page about a `wsae train` run folder or a SAELens folder. `stage(name)` is
  called as each of `STAGES` begins (the command's progress bar). `logit_effects`: each latent's
  most promoted and suppressed tokens through the store's LM unembedding (loads the LM)."""
  stage = stage or (lambda name: None)
  stage(STAGES[0])

  from wsae_jax.evaluation import activations as acts_lib
  from wsae_jax.training import workdir

  run = pathlib.Path(run)
  sae_dir, opened = _read_sae(run)
  cfg, params, run_meta = opened.sae_config, opened.params, opened.record or {}
  eval_file = run / workdir.EVAL if (run / workdir.EVAL).exists() else sae_dir / workdir.EVAL
  eval_result = _read_json(eval_file) if eval_file.exists() else None
  data: dict[str, Any] = {
    "kind": "run",
    "title": f"{cfg.architecture} SAE · {run.resolve().name}",
    "subtitle": f"d_in = {cfg.d_in}, d_sae = {cfg.d_sae}",
    "config": {
      "sae": cfg.to_dict(),
      **{k: run_meta[k] for k in ("train_config", "data", "normalization_scale") if k in run_meta},
    },
    "curves": _history(opened.history),
    "gamma": _gamma(opened.gamma, run_meta.get("gamma_schedule")),
    "notes": [],
  }
  if eval_result:
    data["eval"] = {
      k: v
      for k, v in eval_result.items()
      if not isinstance(v, (dict, list)) or k.endswith("_summary") or k == "ground_truth"
    }
  synthetic = run_meta.get("data", {}).get("kind") == "synthetic"
  x_p = _synthetic_panel(data, run, cfg, params) if synthetic else None
  if x_p is not None:
    codes = acts_lib.sparse_codes(cfg, params, x_p)
    data["scores"] = acts_lib.score(cfg, params, x_p, codes=codes)
    data["latents"] = _latent_table(cfg, params, codes)
  elif activations is not None:
    store = _store_panels(data, cfg, params, activations, eval_shards, max_rows, model, stage)
    if logit_effects:  # the store's LM, loaded only when asked for
      stage("logit effects")
      data["latents"]["logits"] = _logit_effects(cfg, params, store, model)
  else:
    if not synthetic:
      data["notes"].append(
        "no activations given (--activations STORE): latent statistics and contexts are not shown."
      )
    data["latents"] = _latent_table(cfg, params, (None, np.full((1, 1), -1), np.zeros((1, 1))))
    data["latents"]["unscored"] = True
  data["latents"].update(_label_tags(cfg.d_sae, eval_result))
  data["latents"]["n"] = cfg.d_sae
  return data


def _read_sae(run: pathlib.Path):
  """`(sae folder, the opened run)` of a run folder or a SAELens folder (`workdir.open_run`)."""
  import dataclasses

  import jax

  from wsae_jax.storage import saelens
  from wsae_jax.training import workdir

  export = run / workdir.EXPORT
  sae_dir = export if (export / saelens.CFG_FILENAME).exists() else run
  if not (sae_dir / saelens.CFG_FILENAME).exists():
    raise V.WSAEInputError(
      f"{str(run)!r} is neither a run folder of `wsae train` (with sae/) "
      f"nor a SAELens folder (with {saelens.CFG_FILENAME}), nor a sweep "
      f"folder (with sweep.json)."
    )
  opened = workdir.open_run(run)
  return sae_dir, dataclasses.replace(opened, params=jax.device_get(opened.params))


def _store_panels(data, cfg, params, activations, eval_shards, max_rows, model, stage):
  """The scores, latent table, token classes and contexts of an SAE on a store's last
  `eval_shards` shards, into `data`; returns the store."""
  from wsae_jax.data.store import ActivationStore
  from wsae_jax.evaluation import activations as acts_lib

  V.check_int("--eval-shards", eval_shards, low=1)
  store = ActivationStore(
    activations,
    1,
    shards=slice(-eval_shards, None),
    shuffle=False,
    prefetch=0,
    drop_first_position=False,
  )
  if store.d_in != cfg.d_in:
    raise V.WSAEInputError(f"the store has d_in={store.d_in}, the SAE {cfg.d_in}.")
  L = store.context_len  # whole contexts are read, so that examples have their context
  limit = None if max_rows is None else max(L, max_rows // L * L) if L else max_rows
  stage("reading activations")
  x, tokens = store.read_all(max_rows=limit, with_tokens=True)
  L = L or len(x)  # a store without context boundaries: one stream
  stage("encoding")
  codes = acts_lib.sparse_codes(cfg, params, x)
  stage("scoring")
  # Scores without each context's first token (the attention sink), as `wsae eval`.
  later = np.arange(len(x)) % L != 0 if store.context_len else np.ones(len(x), bool)
  data["scores"] = acts_lib.score(cfg, params, x[later], None if tokens is None else tokens[later])
  data["scores"]["activations"] = str(activations)
  # The latent table counts the same rows (a context's first token, e.g. <s>, would top the
  # token lists of the most frequent latents); the contexts below still show every position.
  counted = tuple(a[later] for a in codes)
  if tokens is None:
    data["notes"].append("the store has no token ids: no contexts.")
    data["latents"] = _latent_table(cfg, params, counted)
  else:
    strings, note = _tokenizer_strings(store, model, tokens)
    if note:
      data["notes"].append(note)
    stage("latent table")
    data["latents"] = _latent_table(cfg, params, counted, tokens[later], strings)
    if strings is not None:
      data["latents"]["classes"] = _class_density(counted[1], tokens[later], strings, cfg.d_sae)
    stage("contexts")
    data["contexts"] = _contexts(codes, tokens, L, strings, cfg.d_sae)
  return store


def _synthetic_panel(data, run, cfg, params):
  """Matched true features and the closed form vs the trained encoder; returns the held-out x_p."""
  from wsae_jax.evaluation import metrics
  from wsae_jax.theory import closed_form
  from wsae_jax.training import workdir

  if not (run / workdir.W_P).exists():
    data["notes"].append(
      f"this synthetic run has no {workdir.W_P} (older `wsae train` did not write "
      "it): no true features, no latent statistics."
    )
    return None
  x, x_p, W, gamma = workdir.synthetic_held_out(run)
  from wsae_jax import models

  dec = np.asarray(models.decoder_matrix(cfg, params))
  match = metrics.match_sae(cfg, params, W, by="decoder")
  feature_of = np.full(cfg.d_sae, -1)
  ok = match.latent_of_feature >= 0
  feature_of[match.latent_of_feature[ok]] = np.flatnonzero(ok)
  cos_all = metrics.cosine(dec, W)  # signed: a latent along −W_p[:, j] does not recover feature j
  # The map's rows: each true feature's matched latent in feature order (a perfect SAE shows a
  # diagonal), then the unmatched latents by their closest feature.
  matched = [int(m) for m in match.latent_of_feature if m >= 0]
  rest = sorted(
    set(range(cfg.d_sae)) - set(matched),
    key=lambda m: (int(cos_all[m].argmax()), -float(cos_all[m].max())),
  )
  synth = {
    "n_features": int(W.shape[1]),
    "feature_of_latent": feature_of.tolist(),
    "latent_cos": _round(cos_all.max(axis=1), 4),
    "best_feature": cos_all.argmax(axis=1).tolist(),
    "cos": _b64(np.round(cos_all * 127), "i1"),
    "row_order": matched + rest,
    "n_matched": len(matched),
    "mmcs": _num(cos_all.max(0).mean()),
  }
  # The closed form is the optimum of the tied theory SAE; other architectures are another
  # model class, and a verdict against it would mislead.
  if not models.get(cfg).closed_form:
    synth["closed_form_note"] = (
      f"The closed form (Thm 1) is the optimum of the tied theory SAE; this is a "
      f"{cfg.architecture} SAE, another model class, so it is not compared with it."
    )
  elif cfg.d_sae >= W.shape[1]:
    c = closed_form.compare(cfg, params, W, x, gamma)
    synth["closed_form"] = {
      "verdict": c["verdict"],
      "closed_form": c["closed_form"],
      "trained": c["trained"],
      "encoder_cos": _round(c["encoder_cos"], 4),
      "decoder_cos": _round(c["decoder_cos"], 4),
      "scale": _round(c["scale"], 4),
      "latent_of_feature": c["latent_of_feature"].tolist(),
    }
  data["synthetic"] = synth
  return x_p


def sweep_report(folder) -> dict:
  """The data of the page about a sweep's output folder (sweep.json)."""
  from wsae_jax.evaluation.scoring import pareto_front

  folder = pathlib.Path(folder)
  sw = _read_json(folder / "sweep.json")
  rows = sw.get("rows", [])
  if not rows:
    raise V.WSAEInputError(f"{folder / 'sweep.json'} has no rows to report.")
  y = "mse" if "mse" in rows[0] else "l_sae"
  cols = [k for k, v in rows[0].items() if isinstance(v, (int, float, str, bool)) or v is None]
  table = [
    [(_num(r.get(k)) if isinstance(r.get(k), float) else r.get(k)) for k in cols] for r in rows
  ]
  sae = sw.get("sae_config", {})
  # One front per data setting: members trained on sparser data reach lower L0 at any MSE, so a
  # single front over every setting would hold only the sparsest setting's members.
  setting_keys = [k for k in SETTING_KEYS if any(r.get(k) is not None for r in rows)]
  groups: dict = {}
  for i, r in enumerate(rows):
    key = tuple(r.get(k) for k in setting_keys)
    groups.setdefault(key, []).append(i)
  settings = []
  for key, members in groups.items():
    sub = [rows[i] for i in members]
    settings.append(
      {
        "label": ", ".join(f"{k} = {v}" for k, v in zip(setting_keys, key)) or "all members",
        "members": members,
        "front": [members[j] for j in pareto_front(sub, "l0", y)],
      }
    )
  return {
    "kind": "sweep",
    "title": f"sweep · {folder.resolve().name}",
    "subtitle": f"{len(rows)} members of a {sae.get('architecture', '?')} SAE (d_in = "
    f"{sae.get('d_in', '?')}, d_sae = {sae.get('d_sae', '?')})",
    "config": {"sae": sae},
    "notes": [],
    "sweep": {
      "columns": cols,
      "rows": table,
      "x": "l0",
      "y": y,
      "settings": settings,
      "weighting": [_weighting(r) for r in rows],
      "front": [i for g in settings for i in g["front"]],
    },
  }


SETTING_KEYS = ("geometry", "sparsity")
"""Row fields that name a sweep member's data setting (each gets its own Pareto front)."""


def _weighting(row: dict) -> str:
  """A member's weighting as a legend label: plain, explicit γ, or its γ kind and α."""
  if row.get("gamma_given"):
    return "γ given"
  if row.get("alpha") in (None, 0, 0.0):
    return "plain SAE"
  return f"{row.get('gamma_kind') or 'variance'} α={row['alpha']:g}"


def build_report(path, **kw) -> dict:
  """The data for `path`: a sweep folder (sweep.json), a run folder or a SAELens folder."""
  path = pathlib.Path(path)
  if not path.exists():
    raise V.WSAEInputError(f"{str(path)!r} does not exist.")
  if (path / "sweep.json").exists():
    return sweep_report(path)  # (a sweep has no activations to read)
  return run_report(path, **kw)


def _finite(v):
  """JSON-safe, with NaN and ±inf as null (JSON has no such numbers)."""
  if isinstance(v, dict):
    return {k: _finite(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_finite(x) for x in v]
  if isinstance(v, (float, np.floating)):
    return float(v) if np.isfinite(v) else None
  if isinstance(v, (np.integer, np.bool_, np.ndarray)):
    return _finite(v.tolist())
  return v


def render(data: dict) -> str:
  """The self-contained page for `data`."""
  from wsae_jax import __version__

  payload = json.dumps(
    _finite({**data, "version": __version__}), separators=(",", ":"), allow_nan=False
  )
  payload = payload.replace("<", "\\u003c")  # no "</script>" or "<!--" inside the script element
  page = (PAGE / "page.html").read_text(encoding="utf-8")
  head, tail = page.split("{{DATA}}")  # the data go in last: nothing is substituted inside them
  parts = {
    "{{TITLE}}": html.escape(data.get("title", "wsae report")),
    "/*{{CSS}}*/": (PAGE / "page.css").read_text(encoding="utf-8"),
    "/*{{JS}}*/": (PAGE / "page.js").read_text(encoding="utf-8"),
  }
  for k, v in parts.items():
    head, tail = head.replace(k, v), tail.replace(k, v)
  return head + payload + tail
