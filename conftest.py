"""Root pytest configuration, loaded before any test or doctest imports JAX.

Eight fake CPU devices let the mesh and sharding tests run on any machine. The flag only takes
effect if it is set before JAX initialises its backends, which is why it lives here and not in a
fixture.
"""
import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Keep TensorFlow-free TFDS and absl quiet in test logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
