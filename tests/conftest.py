"""Test set-up: 4 forced CPU devices, set before JAX starts, so 1-vs-4-device checks run anywhere."""

import os

_FLAG = "--xla_force_host_platform_device_count=4"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (must come after XLA_FLAGS)
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def four_devices():
  devices = jax.devices()
  if len(devices) < 4:
    pytest.fail(f"tests need 4 devices; got {len(devices)}. Was JAX imported before conftest set "
                "XLA_FLAGS?")
  return devices[:4]
