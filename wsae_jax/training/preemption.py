"""Stopping a run on SIGTERM or SIGINT at a step boundary, so that the step reached is saved.

    with preemption.deferred() as stop:
      for step in range(start, steps):
        state = train_step(state, batch(step))
        if stop.agreed():
          checkpointer.save(step + 1, state, meta)
          raise stop.interruption(step + 1, saved=True)

A cluster scheduler or a cloud machine sends SIGTERM and gives a grace period; a person presses
Ctrl-C. Inside `deferred()` the first SIGTERM or SIGINT only sets `stop.requested`: the step in
flight finishes, the loop saves it and raises `Interrupted`. A second signal is counted and
otherwise ignored, so the save completes (orbax writes into a temporary folder and renames it:
an interrupted save never looks finished, and the previous checkpoint stays the newest). A third
exits at once with status 128 + signal. The previous handlers are restored on leaving.

Signal handlers can only be installed from the main thread; elsewhere `deferred()` installs none
and `stop.requested` stays False (the default handlers apply). With several processes
(`jax.process_count() > 1`), every process must stop at the same step or its collectives would
wait forever: `stop.agreed()` asks every process (a signal to any one stops all, at one step).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
  """Training stopped on a signal at a step boundary.

  Attributes: `step` (the step reached, saved when `saved`), `signum`, `exit_status`
  (128 + signum: 143 for SIGTERM, 130 for SIGINT, as shells report a process killed by it),
  `state` and `history` (what `train` would have returned at that step, or None).
  """

  def __init__(
    self, step: int, signum: int, *, saved: bool, state=None, history=None, what: str = ""
  ):
    self.step, self.signum, self.saved = int(step), int(signum), saved
    self.state, self.history = state, history
    if not what:
      what = (
        f"{'saved a checkpoint at' if saved else 'nothing saved (no checkpointer) at'} step {step}"
      )
    super().__init__(f"interrupted by {signal.Signals(signum).name}: {what}")

  @property
  def exit_status(self) -> int:
    return 128 + self.signum


@dataclasses.dataclass
class StopRequest:
  """What the signals asked: `signum` of the first (None: none yet) and how many arrived."""

  signum: int | None = None
  count: int = 0

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def agreed(self) -> bool:
    """Whether to stop now: this process's request alone, or, with several processes, whether
    any process has one (a small host all-gather each step, so that every process answers the
    same at the same step)."""
    import jax

    if jax.process_count() > 1:
      import numpy as np
      from jax.experimental import multihost_utils

      flags = multihost_utils.process_allgather(np.int32(self.requested))
      return bool(np.any(flags))
    return self.requested

  def interruption(self, step: int, *, saved: bool, state=None, history=None) -> Interrupted:
    """The `Interrupted` to raise after `step`: this process's signal, or SIGTERM when another
    process of the job asked (`agreed`)."""
    return Interrupted(
      step, self.signum or signal.SIGTERM, saved=saved, state=state, history=history
    )


@contextlib.contextmanager
def deferred(signals=SIGNALS):
  """Within: SIGTERM and SIGINT request a stop instead of ending the process (see the module
  docstring); yields the `StopRequest`."""
  stop = StopRequest()
  if threading.current_thread() is not threading.main_thread():
    yield stop
    return

  def handler(signum, frame):
    stop.count += 1
    if stop.signum is None:
      stop.signum = signum
    if stop.count >= 3:  # the user insists: no further cleanup
      os._exit(128 + signum)

  previous = {s: signal.signal(s, handler) for s in signals}
  try:
    yield stop
  finally:
    for s, h in previous.items():
      signal.signal(s, h)
