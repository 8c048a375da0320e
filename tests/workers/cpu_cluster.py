"""What every test worker process of a multi-process CPU job does first: two forced CPU devices,
gloo collectives, `jax.distributed.initialize`. Imported by the worker scripts beside it (their
folder is on `sys.path` when run as a script) before anything else touches JAX."""

import os


def join(coordinator: str, num_processes: int, process_id: int):
  """Joins the job; returns `jax`, initialised."""
  os.environ["XLA_FLAGS"] = (
    "--xla_force_host_platform_device_count=2 "
    "--xla_cpu_collective_timeout_seconds=600 "
    "--xla_cpu_collective_call_terminate_timeout_seconds=600"
  )
  os.environ["JAX_PLATFORMS"] = "cpu"
  import jax

  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
  )
  return jax
