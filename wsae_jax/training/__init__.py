"""Training: configs, state, optimiser, the jitted step and loop, compiled sweeps, run lifecycle.

config   TrainConfig
state    TrainState and how a fresh one is made
optim    the optax chain (schedule, clipping, Adam, the architecture's constraint steps)
trainer  the jitted step (`apply_step`, `make_train_step`) and the loop `train`
sweep    many SAEs as one compiled program (`train_sweep`)
run      the run lifecycle: records, resume-or-start, reading a checkpoint's SAE back
workdir  a run as a library object: the run folder's layout, `start_run`, `open_run`
gamma    γ kinds: each checks itself for a run and makes its γ (sample, W_p, decoder, file)
preemption  SIGTERM / Ctrl-C stop a run at a step boundary, after saving it (`Interrupted`)
"""

from typing import TYPE_CHECKING

from wsae_jax import _lazy

if TYPE_CHECKING:
  from wsae_jax.training import (  # noqa: F401
    config,
    gamma,
    optim,
    preemption,
    run,
    state,
    sweep,
    trainer,
    workdir,
  )

__getattr__, __dir__ = _lazy.attach(
  __name__,
  globals(),
  (
    "config",
    "gamma",
    "optim",
    "preemption",
    "run",
    "state",
    "sweep",
    "trainer",
    "workdir",
  ),
)
