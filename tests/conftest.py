"""Test set-up: 4 forced CPU devices, set before JAX starts, so 1-vs-4-device checks run anywhere."""

import os

# 4 virtual devices share 2 cores: under load one device's thread can reach a collective long
# after the others, and XLA:CPU aborts the process after 40 s by default. Allow 10 minutes.
_FLAGS = ("--xla_force_host_platform_device_count=4",
          "--xla_cpu_collective_timeout_seconds=600",
          "--xla_cpu_collective_call_terminate_timeout_seconds=600")
for _flag in _FLAGS:
  if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# torch (parity and harvest tests) shares the process: its OpenMP workers must sleep, not spin,
# between parallel regions, or they starve the 4 XLA device threads on 2 cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402  (must come after XLA_FLAGS)
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def four_devices():
  devices = jax.devices()
  if len(devices) < 4:
    pytest.fail(f"tests need 4 devices; got {len(devices)}. Was JAX imported before conftest set "
                "XLA_FLAGS?")
  return devices[:4]
