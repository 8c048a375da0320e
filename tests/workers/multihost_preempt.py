"""One process of a two-process run that a signal to one process interrupts (launched by
tests/test_preemption.py).

Usage: python multihost_preempt.py COORDINATOR PROCESS_ID CHECKPOINTS OUT.npz MODE
MODE "interrupt": process 1 alone sends itself SIGTERM when the record of step 20 is made; every
process must stop at that step, save it together and report it. MODE "resume": continue from the
newest checkpoint to the end and save the final parameters.
"""

import json
import os
import signal
import sys

from cpu_cluster import join

coordinator, process_id, ck_dir, out, mode = sys.argv[1:6]
jax = join(coordinator, 2, int(process_id))

import numpy as np  # noqa: E402

import wsae_jax as w  # noqa: E402
from wsae_jax.storage import checkpoint  # noqa: E402
from wsae_jax.training import preemption  # noqa: E402
from wsae_jax.training import trainer as train  # noqa: E402

W = w.polygon_matrix(3, 3, n_mono=2)
cfg = w.make_config("tied", d_in=8, d_sae=16)
tc = w.TrainConfig(steps=40, batch_size=64, learning_rate=3e-3, warmup_steps=5, log_every=10)
data = w.SyntheticSource(W, 0.8, 64, seed=0)
ck = checkpoint.Checkpointer(ck_dir, every=1000)


def on_record(rec):
  if mode == "interrupt" and jax.process_index() == 1 and rec["step"] == 20:
    os.kill(os.getpid(), signal.SIGTERM)


try:
  state, _ = train.train(
    cfg, tc, data, progress=False, checkpointer=ck, resume=mode == "resume", on_record=on_record
  )
except preemption.Interrupted as e:
  with open(f"{out}.{jax.process_index()}.json", "w") as f:
    json.dump({"step": e.step, "saved": e.saved}, f)
  ck.close()
  sys.exit(e.exit_status)
params = train.to_host(state.params)
ck.close()
if jax.process_index() == 0:
  np.savez(out, **params)
print("done", jax.process_index(), flush=True)
