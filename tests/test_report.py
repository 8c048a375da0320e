"""`wsae report` and the per-latent data behind it (evaluation/features.py), against slow, obvious
references; the page itself is driven in a real browser in tests/test_report_browser.py."""

import base64
import json
import pathlib
import re

import numpy as np
import pytest
from helpers import assert_close

import wsae_jax as w
from wsae_jax.app import cli, report
from wsae_jax.evaluation import features

RNG = np.random.default_rng(0)


def _codes(B, M, K, rng=RNG):
  lat = np.full((B, K), -1)
  val = np.zeros((B, K))
  for b in range(B):
    n = rng.integers(0, K + 1)
    lat[b, :n] = rng.choice(M, n, replace=False)
    val[b, :n] = rng.uniform(0.1, 3.0, n)
  return lat, val


def _dense(lat, val, M):
  z = np.zeros((len(lat), M))
  for b in range(len(lat)):
    for l, v in zip(lat[b], val[b]):
      if l >= 0:
        z[b, l] = v
  return z


def test_latent_stats_match_a_dense_loop():
  lat, val = _codes(400, 12, 4)
  tokens = RNG.integers(0, 7, 400)
  st = features.latent_stats(lat, val, 12, tokens, top_tokens=3)
  z = _dense(lat, val, 12)
  for j in range(12):
    on = z[:, j] > 0
    assert st["count"][j] == on.sum() and st["frequency"][j] == pytest.approx(on.mean())
    assert st["mean"][j] == pytest.approx(z[on, j].mean() if on.any() else 0.0)
    assert st["max"][j] == pytest.approx(z[:, j].max())
    counts = np.bincount(tokens[on], minlength=7)
    top = st["top_tokens"][j][st["top_tokens"][j] >= 0]
    assert list(st["top_token_counts"][j][: len(top)]) == sorted(counts, reverse=True)[: len(top)]
    assert all(counts[t] == c for t, c in zip(top, st["top_token_counts"][j]))


def test_examples_are_the_top_rows_then_rows_of_each_band():
  lat, val = _codes(600, 8, 3)
  exclude = np.arange(600) % 50 == 0
  rows, band = features.examples(lat, val, 8, top=5, per_band=3, exclude_B=exclude)
  z = _dense(lat, val, 8)
  z[exclude] = 0.0
  for j in range(8):
    order = np.argsort(-z[:, j], kind="stable")
    top = rows[j][band[j] == 0]
    assert_close(np.sort(z[top, j])[::-1], z[order[:5], j], rtol=1e-12)
    mx = z[:, j].max()
    for b in (1, 2, 3):
      picked = rows[j][band[j] == b]
      lo, hi = mx * (b - 1) / 3, mx * b / 3
      avail = [r for r in np.flatnonzero((z[:, j] > lo) & (z[:, j] <= hi)) if r not in top]
      assert len(picked) == min(3, len(avail))
      assert set(picked) <= set(avail) and not exclude[picked].any()


def test_windows_hold_the_latents_activation_within_the_context():
  lat, val = _codes(96, 5, 3)
  z = _dense(lat, val, 5)
  rows = np.array([[0, 17, 31, -1], [40, 47, 95, 3], [1, 2, 60, 64], [5, 6, 7, 8], [9, 10, 11, 12]])
  got = features.windows(lat, val, rows, context_len=16, before=3, after=2, chunk=2)
  for j in range(5):
    for e, r in enumerate(rows[j]):
      for w_, off in enumerate(range(-3, 3)):
        p = r + off
        ok = r >= 0 and 0 <= p < 96 and p // 16 == r // 16
        assert got[j, e, w_] == (z[p, j] if ok else 0.0)


def test_decoder_neighbours_against_the_full_cosine_matrix():
  w_dec = RNG.standard_normal((50, 7))
  ids, cos = features.decoder_neighbours(w_dec, 4, chunk=16)
  u = w_dec / np.linalg.norm(w_dec, axis=1, keepdims=True)
  c = u @ u.T
  np.fill_diagonal(c, -np.inf)
  ref = np.argsort(-c, axis=1)[:, :4]
  assert (ids == ref).all()
  assert_close(cos, np.take_along_axis(c, ref, 1), rtol=1e-5)


def page_data(path):
  """The JSON a report page carries."""
  text = path.read_text(encoding="utf-8")
  m = re.search(r'<script id="report-data" type="application/json">(.*?)</script>', text, re.S)
  return json.loads(m.group(1))


def _arr(s, dtype):
  return np.frombuffer(base64.b64decode(s), dtype)


def assert_self_contained(path):
  text = path.read_text(encoding="utf-8")
  assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', text, re.I)
  assert "<link" not in text and "@import" not in text and "url(" not in text
  assert "default-src 'none'" in text


def test_report_of_a_synthetic_run(synthetic_run):
  from wsae_jax.data import problems, sources
  from wsae_jax.evaluation import metrics
  from wsae_jax.storage import saelens

  path = synthetic_run / "report.html"
  assert_self_contained(path)
  d = page_data(path)
  cfg, params = saelens.load_saelens(synthetic_run / "sae")
  W = np.load(synthetic_run / "W_p.npy")
  run = json.loads((synthetic_run / "run.json").read_text())
  x, x_p = (
    np.asarray(a)
    for a in sources.SyntheticSource(
      W, run["data"]["sparsity"], 8192, seed=run["data"]["seed"]
    ).sample(problems.HELD_OUT_STEP, 8192)
  )
  z = np.asarray(w.models.encode(cfg, params, x_p))
  assert d["latents"]["n"] == 32
  assert_close(d["latents"]["frequency"], (z > 0).mean(0), atol=1e-4)
  assert d["scores"]["rows"] == 8192
  match = metrics.match_latents(np.asarray(params["W_dec"]), W)
  feature_of = np.full(32, -1)
  feature_of[match.latent_of_feature] = np.arange(W.shape[1])
  assert d["synthetic"]["feature_of_latent"] == feature_of.tolist()
  assert "closed_form" not in d["synthetic"]  # a topk SAE: not the closed form's model class
  assert "tied theory SAE" in d["synthetic"]["closed_form_note"]
  assert len(d["gamma"]["values"]) == 20 and d["curves"]["step"][-1] == 60
  # A second report does not overwrite the first unless asked; --out must be a web page.
  assert cli.main(["report", str(synthetic_run)]) == 2
  assert cli.main(["report", str(synthetic_run), "--out", str(synthetic_run / "r.txt")]) == 2
  assert cli.main(["report", str(synthetic_run / "nope")]) == 2


def test_tied_report_compares_with_the_closed_form_by_encoder_matching(tied_run):
  from wsae_jax.storage import saelens
  from wsae_jax.theory import closed_form

  d = page_data(tied_run / "report.html")
  cfg, params = saelens.load_saelens(tied_run / "sae")
  assert d["synthetic"]["closed_form"]["verdict"]
  cf = d["synthetic"]["closed_form"]
  # The trained L_GT there is the paper's formula: encoder matching, raw latents.
  W = np.load(tied_run / "W_p.npy")
  from wsae_jax.training import workdir

  x, _, _, gamma = workdir.synthetic_held_out(tied_run)
  ref = closed_form.compare(cfg, params, W, x, gamma)
  assert ref["matched_by"] == "encoder"
  assert_close(cf["trained"]["l_gt"], ref["trained"]["l_gt"], rtol=1e-4)


def test_report_with_activations_shows_each_latents_strongest_contexts(store_run):
  from wsae_jax.data.store import ActivationStore
  from wsae_jax.storage import saelens

  run, store = store_run
  path = run / "report.html"
  assert_self_contained(path)
  d = page_data(path)
  c = d["contexts"]
  x, tokens = ActivationStore(
    store, 1, shards=[3], shuffle=False, drop_first_position=False
  ).read_all(with_tokens=True)
  assert (_arr(c["tokens"], "<u4") == tokens).all() and c["context_len"] == 16
  cfg, params = saelens.load_saelens(run / "sae")
  z = np.asarray(w.models.encode(cfg, params, x), np.float64)
  z[np.arange(len(z)) % 16 == 0] = 0.0  # a context's first token is never an example
  E, W = c["examples"], c["before"] + 1 + c["after"]
  rows = _arr(c["rows"], "<i4").reshape(24, E)
  bands = _arr(c["bands"], "i1").reshape(24, E)
  acts = _arr(c["acts"], "u1").reshape(24, E, W)
  live = np.flatnonzero(z.max(0) > 0)
  assert len(live) > 3
  for j in live:
    top = rows[j][bands[j] == 0]
    assert z[top[0], j] == pytest.approx(z[:, j].max(), rel=1e-5)
    # The example token's shading is its activation relative to the latent's peak window value.
    assert acts[j, 0, c["before"]] == round(255 * z[top[0], j] / c["peak"][j])
  assert set(d["latents"]["top_tokens"][live[0]][0][0].lstrip("#")) <= set("0123456789")
  assert any("token ids shown undecoded" in n for n in d["notes"])  # no tokenizer for this store
  # The latent table counts the rows `wsae eval` scores: not a context's first (BOS) token.
  later = np.arange(len(z)) % 16 != 0
  z_raw = np.asarray(w.models.encode(cfg, params, x), np.float64)
  fired = z_raw[later] > 0
  np.testing.assert_allclose(d["latents"]["frequency"], fired.mean(0), atol=1e-4)
  assert d["latents"]["count"] == fired.sum(0).tolist()
  # Each latent's activation histogram: 20 bins from 0 to its maximum, by a slow loop.
  hist = _arr(d["latents"]["act_hist"], "<u4").reshape(24, d["latents"]["act_hist_bins"])
  for j in range(24):
    v = z_raw[later][:, j]
    v = v[v > 0]
    want = np.zeros(20, int)
    for a in v:
      want[min(int(a / v.max() * 20), 19)] += 1
    assert hist[j].tolist() == want.tolist(), j
  first_tokens = set(tokens[~later].tolist()) - set(tokens[later].tolist())
  for j in live:
    listed = {int(t.lstrip("#")) for t, _ in d["latents"]["top_tokens"][j]}
    assert not listed & first_tokens, j


def test_report_of_a_sweep_marks_its_pareto_front(tmp_path):
  from wsae_jax.evaluation.scoring import pareto_front

  rows = [
    {"seed": i, "k": k, "l0": float(k) + 0.1 * i, "mse": 1.0 / k + 0.05 * i, "note": "x"}
    for i in range(3)
    for k in (2, 4, 8)
  ]
  (tmp_path / "sweep.json").write_text(
    json.dumps({"sae_config": {"architecture": "topk"}, "rows": rows})
  )
  assert cli.main(["report", str(tmp_path)]) == 0
  d = page_data(tmp_path / "report.html")
  assert d["sweep"]["front"] == pareto_front(rows) and len(d["sweep"]["rows"]) == 9
  assert d["sweep"]["columns"] == ["seed", "k", "l0", "mse", "note"]


def test_a_4608_latent_report_stays_small(tmp_path):
  """The issue's bound for a 4,608-latent SAE (SmolLM2 8x: 576 -> 4,608) on 22,720 rows: under
  50 MB (the page the benchmark opens in chromium; the real store's page: README)."""
  import sys

  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
  import bench_report_page

  page = bench_report_page.synthetic_page(4608, tmp_path)
  d = page_data(page)
  assert d["latents"]["n"] == 4608 and d["contexts"]["examples"] == 22
  assert page.stat().st_size < 50e6, page.stat().st_size


def test_report_shows_the_decoder_gamma_of_the_newest_checkpoint(tmp_path):
  from wsae_jax.training import run as run_lib

  out = tmp_path / "run"
  assert (
    cli.main(
      [
        "train",
        "--out",
        str(out),
        "--arch",
        "topk",
        "--k",
        "4",
        "--d-sae",
        "40",
        "--steps",
        "30",
        "--batch-size",
        "64",
        "--no-progress",
        "--gamma",
        "decoder",
        "--alpha",
        "1",
        "--gamma-every",
        "10",
      ]
    )
    == 0
  )
  assert cli.main(["report", str(out)]) == 0
  g = page_data(out / "report.html")["gamma"]
  meta = run_lib.load_params(out / "checkpoints")[2]
  assert g["description"] == {"kind": "decoder", "alpha": 1.0, "every": 10}
  assert_close(g["values"], meta["gamma_current"], rtol=1e-4)
  assert np.ptp(g["values"]) > 0  # re-estimated: no longer the initial γ = 1


def test_report_on_a_bare_npy_file_without_contexts(tmp_path):
  x = np.random.default_rng(3).standard_normal((300, 8)).astype(np.float32)
  np.save(tmp_path / "x.npy", x)
  run = tmp_path / "run"
  assert (
    cli.main(
      [
        "train",
        "--out",
        str(run),
        "--activations",
        str(tmp_path / "x.npy"),
        "--arch",
        "topk",
        "--k",
        "2",
        "--d-sae",
        "16",
        "--steps",
        "10",
        "--batch-size",
        "32",
        "--no-progress",
      ]
    )
    == 0
  )
  assert (
    cli.main(["report", str(run), "--activations", str(tmp_path / "x.npy"), "--max-rows", "200"])
    == 0
  )
  d = page_data(run / "report.html")
  assert d["scores"]["rows"] == 200 and "contexts" not in d  # no token ids, no contexts
  assert any("no token ids" in n for n in d["notes"])


def test_latent_tags_come_from_eval_json():
  ev = {
    "probing": {
      "ly_word": {"k": {"1": 0.81}, "latents": {"1": [3]}},
      "digit": {"positives": 2, "skipped": "too few rows of one class"},
    },
    "absorption": {
      "s": {"main_latents": [3, 5], "main_f1": [0.36, 0.5], "absorbing_latents": {"7": 4}}
    },
  }
  tags = report._label_tags(8, ev)
  assert tags["probe"][3] == "ly_word (F1 0.81)" and tags["probe"][5] == ""
  assert tags["absorption"][3] == "s main (F1 0.36)" and tags["absorption"][7] == "absorbs s ×4"
  assert report._label_tags(2, None) == {"probe": ["", ""], "absorption": ["", ""]}


def test_sweep_page_has_one_pareto_front_per_data_setting(tmp_path):
  """Members at S = 0.99 reach lower L0 at any MSE than those at S = 0.7; one front over both
  would hold only the sparse ones. Each setting gets its own front, from its own members."""
  from wsae_jax.evaluation.scoring import pareto_front

  rng = np.random.default_rng(0)
  rows = []
  for S, l0 in ((0.7, 8.0), (0.99, 1.0)):
    for i in range(6):
      rows.append(
        {
          "seed": i,
          "sparsity": S,
          "alpha": [0.0, 1.0][i % 2],
          "gamma_kind": "variance",
          "gamma_given": False,
          "l0": l0 * (1 + 0.3 * rng.random()),
          "mse": 0.1 * (1 + rng.random()),
        }
      )
  (tmp_path / "sweep.json").write_text(json.dumps({"sae_config": {}, "rows": rows}))
  assert cli.main(["report", str(tmp_path)]) == 0
  sw = page_data(tmp_path / "report.html")["sweep"]
  assert [g["label"] for g in sw["settings"]] == ["sparsity = 0.7", "sparsity = 0.99"]
  for g in sw["settings"]:
    sub = [rows[i] for i in g["members"]]
    assert {r["sparsity"] for r in sub} == {float(g["label"].split("= ")[1])}
    assert g["front"] == [g["members"][j] for j in pareto_front(sub)]
  assert any(rows[i]["sparsity"] == 0.7 for i in sw["front"])  # the dense setting has a front
  assert set(sw["weighting"]) == {"plain SAE", "variance α=1"}


def test_report_and_eval_show_progress_unless_told_not_to(store_run, tmp_path, capsys):
  """Progress bars go to stderr, stage by stage; --no-progress silences them."""
  run, store = store_run
  assert (
    cli.main(
      [
        "report",
        str(run),
        "--activations",
        str(store),
        "--eval-shards",
        "1",
        "--out",
        str(tmp_path / "a.html"),
      ]
    )
    == 0
  )
  err = capsys.readouterr().err
  assert "wsae report" in err and "contexts" in err
  assert (
    cli.main(
      [
        "report",
        str(run),
        "--activations",
        str(store),
        "--eval-shards",
        "1",
        "--out",
        str(tmp_path / "b.html"),
        "--no-progress",
      ]
    )
    == 0
  )
  assert "wsae report" not in capsys.readouterr().err
  assert (
    cli.main(
      [
        "eval",
        str(run),
        "--activations",
        str(store),
        "--eval-shards",
        "1",
        "--out",
        str(tmp_path / "e.json"),
      ]
    )
    == 0
  )
  err = capsys.readouterr().err
  assert "wsae eval" in err and "encoding" in err
  assert (
    cli.main(
      [
        "eval",
        str(run),
        "--activations",
        str(store),
        "--eval-shards",
        "1",
        "--out",
        str(tmp_path / "f.json"),
        "--no-progress",
      ]
    )
    == 0
  )
  assert "wsae eval" not in capsys.readouterr().err


def test_logit_effects_are_the_decoder_through_the_final_norm_and_unembedding(
  logit_effects_run, tmp_path
):
  """`wsae report --logit-effects`: per latent the 10 tokens with the largest and smallest
  (w_dec ⊙ g) W_Uᵀ, g the final RMSNorm's weight, against numpy on the tiny Llama."""
  import transformers

  from wsae_jax.storage import saelens

  run, tiny = logit_effects_run
  g = page_data(run / "report.html")["latents"]["logits"]
  lm = transformers.LlamaForCausalLM.from_pretrained(tiny)
  W_U = lm.lm_head.weight.detach().double().numpy()
  norm = lm.model.norm.weight.detach().double().numpy()
  cfg, params = saelens.load_saelens(run / "sae")
  L = (np.asarray(params["W_dec"], np.float64) * norm) @ W_U.T
  k = g["k"]
  assert k == 10 and "model.norm.weight" in g["formula"]
  ids = _arr(g["promote_ids"], "<i4").reshape(32, k)
  vals = _arr(g["promote"], "<f4").reshape(32, k)
  low = _arr(g["suppress_ids"], "<i4").reshape(32, k)
  for m in range(32):
    assert ids[m].tolist() == np.argsort(-L[m])[:k].tolist()
    assert low[m].tolist() == np.argsort(L[m])[:k].tolist()
    np.testing.assert_allclose(vals[m], np.sort(L[m])[::-1][:k], rtol=1e-4, atol=1e-5)
  assert (
    cli.main(["report", str(run), "--logit-effects", "--out", str(tmp_path / "x.html")]) == 2
  )  # needs --activations


def test_class_density_is_each_latents_firing_rate_within_each_token_class():
  from wsae_jax.app import report

  strings = {0: "Hello", 1: ",", 2: " quickly", 3: "the", 4: "\n", 5: "Emma"}
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 6, 400)
  lat = np.stack([rng.permutation(9)[:3] - 1 for _ in range(400)])  # a latent once per row
  out = report._class_density(lat, tokens, strings, 8)
  dens = _arr(out["density"], "<f4").reshape(8, len(out["names"]))
  from wsae_jax.evaluation import probing

  classes = probing.token_classes(strings)
  for c, name in enumerate(out["names"]):
    rows = np.flatnonzero(np.isin(tokens, list(classes[name])))
    assert out["rows"][c] == len(rows) >= report.MIN_CLASS_ROWS
    for m in range(8):
      want = sum(int(m in lat[r]) for r in rows) / len(rows)
      assert dens[m, c] == pytest.approx(want, abs=1e-6), (name, m)
  assert "capitalised" in out["names"] and "punctuation" in out["names"]
