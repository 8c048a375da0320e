"""Interop: SAELens folders (`cfg.json` + `sae_weights.safetensors`) in both directions.

Each architecture says how it maps (`Architecture.saelens_name`, `to_saelens`, `from_saelens`;
SAELens v6 semantics):
  * `relu`      -> "standard", `apply_b_dec_to_input = False` (Anthropic's April-2024 recipe).
  * `topk`      -> "topk", `apply_b_dec_to_input = True`, `k`.
  * `tied`      -> an equivalent untied "standard" SAE: `W_dec = W_encᵀ`, zero biases.
  * `jumprelu`  -> "jumprelu" with its `threshold`, `apply_b_dec_to_input = False`.
  * `batchtopk` -> "jumprelu" with θ for every latent, `apply_b_dec_to_input = True` (as SAELens
    saves BatchTopK SAEs).
Folders written by other tools load as relu ("standard"), topk or jumprelu; an
`apply_b_dec_to_input` encoder is folded exactly into `b_enc` where ours does not subtract b_dec.
A normalisation scale `c` (the SAE was trained on `c·x`) is folded into the weights as SAELens'
`fold_activation_norm_scaling_factor` does (`W_enc·c`, `W_dec/c`, `b_dec/c`), so the exported SAE
takes raw activations and `normalize_activations` is "none"; the scale is kept under
`wsae_jax.normalization_scale` for the record.
"""

from __future__ import annotations

import errno
import json
import pathlib
import warnings

import numpy as np

from wsae_jax import _validate as V
from wsae_jax import models
from wsae_jax.storage import records

CFG_FILENAME = "cfg.json"
# cfg.json fields this reader uses (others are allowed and ignored).
CFG_REQUIRED = {"d_in": int, "d_sae": int}
SAELENS_FORMAT = "6.54.12"
"""The SAELens release whose folder format `save_saelens` writes (CI reads it back with it)."""
CFG_OPTIONAL = {
  "architecture": str,
  "apply_b_dec_to_input": bool,
  "k": int,
  "normalize_activations": (str, type(None)),
  "wsae_jax": (dict, type(None)),
  "rescale_acts_by_decoder_norm": bool,
}
WEIGHTS_FILENAME = "sae_weights.safetensors"


def save_saelens(
  path,
  cfg,
  params,
  *,
  normalization_scale: float | None = None,
  standardization: dict | None = None,
  metadata: dict | None = None,
) -> pathlib.Path:
  """Writes an SAE as a SAELens folder; returns the folder.

  The folder is written as a unit: built beside `path` and renamed into place, replacing an
  earlier SAELens folder there only once the new one is complete (`records.atomic_folder`); a
  failed write raises `records.OutputWriteError` and leaves the old folder as it was.

  Args:
    path: output folder (created; an existing one must be a SAELens folder or empty).
    cfg: the SAE config.
    params: its parameters.
    normalization_scale: `c` if the SAE was trained on `c·x` (folded into the weights).
    standardization: `{"mean", "std"}` per input dimension if the SAE was trained on
      `(x − mean) / std` (folded into the weights; exclusive with `normalization_scale`).
    metadata: SAELens `metadata` fields (model_name, hook_name, hook_layer, context_size, ...;
      `metadata_from_data` builds them from a run's data description).
  """
  # Over 80 lines with its docstring and signature; the code writes one folder, in order.
  from safetensors.numpy import save_file

  exported = models.get(cfg).to_saelens(cfg, params)
  w = dict(exported.tensors)
  for name, arr in w.items():
    V.check_finite(f"params[{name!r}]", arr)
  if normalization_scale is not None and standardization is not None:
    raise V.WSAEInputError("give normalization_scale or standardization, not both.")
  if normalization_scale is not None:
    V.check_range("normalization_scale", normalization_scale, low=0.0, low_open=True)
    w = fold_input_transform(
      w,
      exported.fields,
      shift=np.zeros(cfg.d_in, np.float32),
      scale=np.full(cfg.d_in, normalization_scale, np.float32),
    )
  if standardization is not None:
    V.check_fields("standardization", standardization, {"mean": list, "std": list})
    std = np.asarray(standardization["std"], np.float64)
    V.check_range("standardization std", std, low=0.0, low_open=True)
    w = fold_input_transform(w, exported.fields, shift=standardization["mean"], scale=1.0 / std)
  out = pathlib.Path(path)
  if out.is_dir() and any(out.iterdir()) and not (out / CFG_FILENAME).exists():
    raise V.WSAEInputError(
      f"{str(out)!r} is not empty and holds no SAELens folder "
      f"({CFG_FILENAME}); choose a new or empty folder."
    )
  if out.exists() and not out.is_dir():
    raise V.WSAEInputError(f"{str(out)!r} is a file; choose a folder.")
  cfg_json = {
    "architecture": models.get(cfg).saelens_name,
    "d_in": cfg.d_in,
    "d_sae": cfg.d_sae,
    "dtype": "float32",
    "device": "cpu",
    **exported.fields,
    "normalize_activations": "none",
    "reshape_activations": "none",
    # SAELens 6 reads "metadata" (SAEMetadata): the model and hook the SAE is for, and the
    # format's version (without one, SAELens converts the file as a pre-6.0 config and drops it).
    "metadata": {
      "model_name": None,
      "hook_name": None,
      "hook_layer": None,
      "context_size": None,
      "sae_lens_version": SAELENS_FORMAT,
      **(metadata or {}),
    },
    "wsae_jax": {
      "config": cfg.to_dict(),
      "normalization_scale": normalization_scale,
      "standardization": standardization,
    },
  }
  from safetensors import SafetensorError

  with records.atomic_folder(out, replace=True) as tmp:
    try:
      save_file(w, str(tmp / WEIGHTS_FILENAME))
    except SafetensorError as e:  # safetensors reports a failed write as its own error
      cause = records.write_failure(e) or OSError(errno.EIO, str(e).strip() or "write failed")
      raise records.OutputWriteError(out / WEIGHTS_FILENAME, cause) from e
    (tmp / CFG_FILENAME).write_text(json.dumps(cfg_json, indent=2))
  return out


def metadata_from_data(data: dict | None) -> dict:
  """SAELens metadata from a run's data description (`sources.describe`): for an activation store
  the model, the context length, the corpus (`dataset_path`), the layer and the hook, TransformerLens's `blocks.L.hook_<point>` with the store's
  hook point (`lm.harvest.HOOK_POINTS`; a block's output, `resid_post`, when it records none).
  Synthetic data has none."""
  if not data or data.get("kind") != "activations":
    return {}
  out: dict = {}
  if data.get("model"):
    out["model_name"] = data["model"]
  if isinstance(data.get("context_len"), int):
    out["context_size"] = data["context_len"]
  if data.get("corpus"):
    out["dataset_path"] = data["corpus"]
  if isinstance(data.get("layer"), int):
    out["hook_layer"] = data["layer"]
    out["hook_name"] = f"blocks.{data['layer']}.hook_{data.get('hook_point') or 'resid_post'}"
  return out


def fold_decoder_norms(tensors: dict) -> dict:
  """The plain SAE equal to SAELens's `rescale_acts_by_decoder_norm = True` (Top-k): SAELens
  encodes `topk((x W_enc + b_enc) ⊙ n)` and decodes `(z / n) W_dec + b_dec` with `n` the decoder
  row norms, so `W_enc ⊙ n`, `b_enc ⊙ n` and `W_dec / n` give the same codes and outputs (an
  input-side `b_dec` subtraction is unaffected)."""
  out = {k: np.asarray(v, np.float64) for k, v in tensors.items()}
  n = np.linalg.norm(out["W_dec"], axis=1)
  if np.any(n == 0):
    raise V.WSAEInputError(
      f"rescale_acts_by_decoder_norm: {int(np.sum(n == 0))} decoder row(s) "
      f"are zero, so the activations cannot be rescaled by their norm."
    )
  out["W_enc"] = out["W_enc"] * n[None, :]
  if "b_enc" in out:
    out["b_enc"] = out["b_enc"] * n
  out["W_dec"] = out["W_dec"] / n[:, None]
  return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def fold_input_transform(tensors: dict, fields: dict, *, shift, scale) -> dict:
  """The tensors of the SAE that takes raw `x`, for one trained on `x' = (x − shift) ⊙ scale`.

  Encoder: `W_enc ← diag(scale) W_enc`; with `apply_b_dec_to_input` the input offset rides on
  `b_dec` (`(x − b_dec') W_enc' = (x' − b_dec) W_enc` for `b_dec' = b_dec / scale + shift`),
  without it `b_enc ← b_enc − (shift ⊙ scale) W_enc`. Decoder: `x̂ = x̂' / scale + shift`, so
  `W_dec ← W_dec diag(1/scale)`, `b_dec ← b_dec / scale + shift`. Pre-activations are unchanged,
  so thresholds are too.
  """
  s = np.asarray(scale, np.float64)
  mu = np.asarray(shift, np.float64)
  w = {k: np.asarray(v, np.float64) for k, v in tensors.items()}
  out = dict(w)
  out["W_enc"] = s[:, None] * w["W_enc"]
  out["W_dec"] = w["W_dec"] / s[None, :]
  out["b_dec"] = w["b_dec"] / s + mu
  if not fields.get("apply_b_dec_to_input", False):
    out["b_enc"] = w["b_enc"] - (mu * s) @ w["W_enc"]
  return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def load_saelens(path):
  """Reads a SAELens folder into `(config, params)` of this library.

  Folders of other tools load as the default architecture of their SAELens name (standard ->
  relu, topk, jumprelu); an encoder with `apply_b_dec_to_input = True` is converted exactly by
  folding `−b_dec W_enc` into `b_enc` where ours does not subtract b_dec, and Top-k SAEs with
  `rescale_acts_by_decoder_norm = True` by folding the decoder norms (`fold_decoder_norms`);
  bfloat16 / float16 weights are upcast to float32 (with a warning). SAEs exported by
  `save_saelens` come back as they were saved (a tied SAE returns as its untied equivalent; see
  `wsae_jax` in cfg.json for the original config).
  """
  folder = pathlib.Path(path)
  cfg_path, w_path = folder / CFG_FILENAME, folder / WEIGHTS_FILENAME
  for f in (cfg_path, w_path):
    if not f.exists():
      raise V.WSAEInputError(f"{folder} is not a SAELens folder: {f.name} is missing.")
  try:
    c = json.loads(cfg_path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise V.WSAEInputError(f"{cfg_path} is not valid JSON: {e}") from None
  # SAELens writes many more fields (model and hook names, dtype, device, …): those are allowed;
  # the ones read here must be present and well typed.
  V.check_fields(str(cfg_path), c, CFG_REQUIRED, CFG_OPTIONAL, allow_unknown=True)
  d_in, d_sae = c["d_in"], c["d_sae"]
  for name, v in (("d_in", d_in), ("d_sae", d_sae)):
    if v < 1:
      raise V.WSAEInputError(f"{cfg_path}: field {name!r} must be >= 1, got {v}.")
  w = _read_tensors(w_path, cfg_path, d_in, d_sae)
  if (c.get("normalize_activations") or "none") != "none":
    raise V.WSAEInputError(
      f"{cfg_path}: normalize_activations={c['normalize_activations']!r} is not supported; fold "
      f"the scaling factor into the weights first (SAELens: fold_activation_norm_scaling_factor)."
    )
  if c.get("rescale_acts_by_decoder_norm"):  # SAELens sets it on Top-k SAEs; exact for any
    w = fold_decoder_norms(w)  # activation applied to the rescaled pre-activation
  ours = (c.get("wsae_jax") or {}).get("config") or {}
  if ours:
    V.check_fields(f"{cfg_path}: wsae_jax.config", ours, {"architecture": str}, allow_unknown=True)
    for name, v in (("d_in", d_in), ("d_sae", d_sae)):
      if ours.get(name, v) != v:
        raise V.WSAEInputError(
          f"{cfg_path}: wsae_jax.config.{name} = {ours[name]!r} contradicts "
          f"{name} = {v}; the file was edited inconsistently."
        )
  try:
    arch = models.for_saelens(c.get("architecture") or "standard", ours)
  except V.WSAEInputError as e:
    raise V.WSAEInputError(f"{cfg_path}: {e}") from None
  try:
    return arch.from_saelens(c, w, ours)
  except V.WSAEInputError as e:
    raise V.WSAEInputError(f"{cfg_path}: {e}") from None


def _read_tensors(w_path, cfg_path, d_in: int, d_sae: int) -> dict[str, np.ndarray]:
  """The folder's tensors as float32, each checked: float dtype, finite, SAELens shapes."""
  from safetensors.numpy import load_file

  try:
    w = load_file(str(w_path))
  except Exception as e:  # safetensors raises its own error types for truncated/garbage files
    raise V.WSAEInputError(
      f"{w_path} cannot be read as safetensors ({type(e).__name__}: "
      f"{str(e)[:200]}); the file is truncated or not a safetensors "
      f"file."
    ) from None
  missing = {"W_enc", "W_dec", "b_dec"} - set(w)
  if missing:
    raise V.WSAEInputError(f"{w_path} lacks {sorted(missing)}.")
  want = {
    "W_enc": (d_in, d_sae),
    "W_dec": (d_sae, d_in),
    "b_enc": (d_sae,),
    "b_dec": (d_in,),
    "b_gate": (d_sae,),
    "b_mag": (d_sae,),
    "r_mag": (d_sae,),
  }
  low: set[str] = set()
  for name in sorted(w, key=lambda n: (n not in want, list(want).index(n) if n in want else 0, n)):
    arr = w[name]
    if name in want and arr.shape != want[name]:
      raise V.WSAEInputError(
        f"{w_path}: {name} has shape {arr.shape}, but {cfg_path.name} (d_in={d_in}, "
        f"d_sae={d_sae}) requires {want[name]}. The config and the weights disagree."
      )
    if str(arr.dtype) in ("bfloat16", "float16"):
      low.add(str(arr.dtype))
      arr = np.asarray(arr, np.float32)
    elif not np.issubdtype(arr.dtype, np.floating):
      raise V.WSAEInputError(
        f"{w_path}: {name} has dtype {arr.dtype}; weights must be float16, "
        f"bfloat16, float32 or float64."
      )
    w[name] = arr
    bad = ~np.isfinite(arr)
    if bad.any():
      raise V.WSAEInputError(
        f"{w_path}: {name} holds {int(bad.sum())} non-finite value(s) (NaN/inf), the first at "
        f"index {tuple(int(i) for i in np.argwhere(bad)[0])}; the SAE is broken."
      )
  if low:
    warnings.warn(
      f"{w_path}: weights stored as {' and '.join(sorted(low))}; upcast to float32 "
      f"(computations run in float32).",
      UserWarning,
      stacklevel=3,
    )
  return {k: np.asarray(v, np.float32) for k, v in w.items()}
