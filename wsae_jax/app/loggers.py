"""Where `wsae train` sends its history records besides history.json: TensorBoard event files
(tensorboardX, no TensorFlow) and Weights & Biases. Each is an `on_record` callback of
`trainer.train` with a `close()`; a notebook passes its own callable instead.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from wsae_jax import _validate as V


def _scalars(rec: dict) -> dict:
  return {
    k: v
    for k, v in rec.items()
    if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
  }


class TensorBoard:
  """History records as TensorBoard scalars (`train/loss`, `train/l0`, … at their step)."""

  @staticmethod
  def check(folder) -> None:
    """Raises `WSAEInputError` if tensorboardX is missing or `folder` cannot be written."""
    if importlib.util.find_spec("tensorboardX") is None:
      raise V.WSAEInputError("--tensorboard needs tensorboardX: pip install -e '.[log]'.")
    V.check_writable_dir(folder, "--tensorboard")

  def __init__(self, folder):
    self.check(folder)
    from tensorboardX import SummaryWriter

    self.writer = SummaryWriter(str(folder))

  def __call__(self, rec: dict) -> None:
    for k, v in _scalars(rec).items():
      self.writer.add_scalar(f"train/{k}", v, rec["step"])
    self.writer.flush()

  def close(self) -> None:
    self.writer.close()


class WandB:
  """History records logged to a W&B run (`train/loss`, … at their step), its config the run's
  record. The mode is W&B's own (`WANDB_MODE`); unset, it is "offline" (files under
  `folder/wandb`, `wandb sync` uploads them later), so a run never waits on a network."""

  @staticmethod
  def check() -> None:
    """Raises `WSAEInputError` if wandb is missing."""
    if importlib.util.find_spec("wandb") is None:
      raise V.WSAEInputError("--wandb needs the wandb package: pip install -e '.[log]'.")

  def __init__(self, project: str, folder, config: dict, name: str | None = None):
    self.check()
    import wandb

    mode: Any = os.environ.get("WANDB_MODE") or "offline"  # W&B checks the value itself
    self.run = wandb.init(
      project=project, dir=str(folder), config=config, name=name, mode=mode, reinit="create_new"
    )

  def __call__(self, rec: dict) -> None:
    self.run.log({f"train/{k}": v for k, v in _scalars(rec).items()}, step=int(rec["step"]))

  def close(self) -> None:
    self.run.finish()


class Fanout:
  """Several loggers as one callback."""

  def __init__(self, loggers):
    self.loggers = [g for g in loggers if g is not None]

  def __call__(self, rec: dict) -> None:
    for g in self.loggers:
      g(rec)

  def close(self) -> None:
    for g in self.loggers:
      g.close()
