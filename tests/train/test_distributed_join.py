"""A multi-process join that cannot complete ends with the documented error, not SIGABRT."""

import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_JOIN = ("import sys; from lamb_optax.train import distributed; "
         "distributed.initialize(sys.argv[1], 2, int(sys.argv[2]), timeout_seconds=3); "
         "print('joined')")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.parametrize("process_id", [
    1,  # the coordinator (process 0) is not there: unreachable
    # This is the coordinator; its peer never joins. Slow: a second process waiting out a timeout.
    pytest.param(0, marks=pytest.mark.slow),
])
def test_a_join_that_times_out_names_the_coordinator_and_exits_1(process_id):
  address = f"127.0.0.1:{_free_port()}"
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _JOIN, address, str(process_id)],
                        capture_output=True, text=True, env=env, timeout=120)
  assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
  assert f"could not join the coordinator at {address} within 3s" in proc.stderr
  assert "another task died" not in proc.stderr and "joined" not in proc.stdout
