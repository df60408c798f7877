"""scripts/tpu_pod.py: the gcloud commands each subcommand prints (lamb_optax.tpu.pod), the
checks that refuse bad input before any gcloud call (lamb_optax.tpu.pod_checks), and the remote
shell snippets executed for real in a fake $HOME. Also the package functions it uses instead of
copies: lamb_optax.accelerators (the slice table), lamb_optax.train.config's load and
lamb_optax.sharding's data_parallel_size."""

import importlib.util
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time

import pytest

from lamb_optax import accelerators
from lamb_optax import sharding
from lamb_optax.tpu import pod
from lamb_optax.tpu import pod_checks
from lamb_optax.train import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("tpu_pod", ROOT / "scripts" / "tpu_pod.py")
tpu_pod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tpu_pod)
# The compile check itself, before the fixture below records calls in its place.
_compile_check = pod_checks.compile_check

WHERE = ["--zone=us-central2-b", "--project=my-proj"]
DATA = ["--config.data.source=gs://b/bert_data_128", "--config.data.vocab_file=gs://b/vocab.txt"]


def _kill_quietly(pid: int) -> None:
  """SIGKILL a trainer a test started, which may have exited already."""
  try:
    os.kill(pid, 9)
  except ProcessLookupError:
    pass


@pytest.fixture(autouse=True)
def _no_gcloud_defaults(monkeypatch):
  monkeypatch.delenv("CLOUDSDK_CORE_PROJECT", raising=False)
  monkeypatch.delenv("CLOUDSDK_COMPUTE_ZONE", raising=False)


@pytest.fixture(autouse=True)
def compile_checks(monkeypatch):
  """Tests here are about gcloud command lines: the compile check (minutes of XLA) is recorded,
  not run; tests/tpu/test_compile_for.py compiles for real."""
  calls = []
  monkeypatch.setattr(pod_checks, "compile_check",
                      lambda config_arg, slice_, overrides=(): calls.append(
                          (config_arg, slice_.accelerator_type, list(overrides))))
  return calls


def dry_run(capsys, *argv):
  rc = tpu_pod.main([*argv, "--dry-run"])
  out, err = capsys.readouterr()
  assert rc == 0, err
  return [shlex.split(line) for line in out.splitlines()]


def refused(capsys, *argv):
  rc = tpu_pod.main(list(argv))
  out, err = capsys.readouterr()
  assert rc == 2 and not out, (rc, out)
  return err


def remote(cmd):
  (arg,) = [a for a in cmd if a.startswith("--command=")]
  return arg[len("--command="):]


@pytest.mark.parametrize("accel, devices, chips, vms", [
    ("v2-8", 8, 4, 1), ("v3-32", 32, 16, 4), ("v4-8", 4, 4, 1), ("v4-128", 64, 64, 16),
    ("v4-1024", 512, 512, 128), ("v5p-8", 4, 4, 1), ("v5p-1024", 512, 512, 128),
    ("v5litepod-1", 1, 1, 1), ("v5litepod-8", 8, 8, 1), ("v5litepod-16", 16, 16, 4),
    ("v5e-256", 256, 256, 64), ("v6e-8", 8, 8, 1), ("v6e-256", 256, 256, 64)])
def test_parse_accelerator(accel, devices, chips, vms):
  s = accelerators.parse_accelerator(accel)
  assert (s.devices, s.chips, s.vms) == (devices, chips, vms)
  assert s.multi_host == (vms > 1)


@pytest.mark.parametrize("accel", ["v4", "v4-12", "v5litepod-12", "v6e-512", "v7x-8", "tpu-8", ""])
def test_parse_accelerator_refuses(accel):
  with pytest.raises(accelerators.AcceleratorError,
                     match="accelerator-type|multiples|slices have|Unknown"):
    accelerators.parse_accelerator(accel)


def test_generation_table():
  gens = accelerators.GENERATIONS
  assert set(accelerators.DEFAULT_RUNTIME) == set(gens)
  for name, g in gens.items():
    s = accelerators.parse_accelerator(f"{g.prefixes[0]}-{g.sizes[-1] if g.sizes else 128}")
    assert s.generation == name
    assert s.devices == s.chips * g.devices_per_chip
  # The sourced per-chip figures (see the comments beside the table).
  assert {n: g.peak_bf16_flops_per_chip for n, g in gens.items() if g.peak_bf16_flops_per_chip} == {
      "v3": 123e12, "v4": 275e12, "v5p": 459e12, "v5e": 197e12, "v6e": 918e12}
  assert gens["v5p"].hbm_bandwidth_per_chip == 2765e9 and gens["v4"].ici_bandwidth_per_chip is None
  # docs.cloud.google.com/tpu/docs/v6e: "HBM bandwidth per chip 1638 GBps" (older: 1600, 1640).
  assert gens["v6e"].hbm_bandwidth_per_chip == 1638e9
  assert gens["v6e"].ici_bandwidth_per_chip == 800e9


def test_create_dry_run(capsys):
  (cmd,) = dry_run(capsys, "create", "bert", "--accelerator-type=v4-128", *WHERE)
  assert cmd == ["gcloud", "compute", "tpus", "tpu-vm", "create", "bert", *WHERE,
                 "--accelerator-type=v4-128", "--version=tpu-ubuntu2204-base"]
  (cmd,) = dry_run(capsys, "create", "bert", "--accelerator-type=v4-128", *WHERE, "--preemptible")
  assert cmd[-1] == "--preemptible"


def test_create_queued_spot_dry_run(capsys):
  (cmd,) = dry_run(capsys, "create", "bert", "--accelerator-type=v5p-128", *WHERE, "--queued",
                   "--spot")
  assert cmd == ["gcloud", "compute", "tpus", "queued-resources", "create", "bert",
                 "--node-id=bert", *WHERE, "--accelerator-type=v5p-128",
                 "--runtime-version=v2-alpha-tpuv5", "--spot"]
  (cmd,) = dry_run(capsys, "create", "x", "--accelerator-type=v6e-256", *WHERE,
                   "--runtime-version=my-image")
  assert "--version=my-image" in cmd


def test_create_checks_config_batch(capsys):
  err = refused(capsys, "create", "bert", "--accelerator-type=v4-8", *WHERE, "--dry-run",
                "--config=configs/bert_large_phase1.py", "--config.global_batch_size=100")
  assert "global_batch_size 100" in err
  (cmd,) = dry_run(capsys, "create", "bert", "--accelerator-type=v4-1024", *WHERE,
                   "--config=configs/bert_large_phase1.py")
  assert cmd[4] == "create"


@pytest.mark.parametrize("flags, message", [
    (["--spot", "--preemptible"], "exclude each other"),
    (["--queued", "--preemptible"], "take --spot"),
])
def test_create_refuses_flag_mix(capsys, flags, message):
  assert message in refused(capsys, "create", "b", "--accelerator-type=v4-8", *WHERE,
                            "--dry-run", *flags)


def test_setup_dry_run(capsys):
  (cmd,) = dry_run(capsys, "setup", "bert", *WHERE, "--repo=https://example.com/r.git",
                   "--ref=v0.1")
  assert cmd[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "bert", *WHERE, "--worker=all"]
  script = remote(cmd)
  assert "git clone --quiet https://example.com/r.git lamb_optax" in script
  assert "git checkout --quiet v0.1" in script
  assert "python3 -m pip install --quiet -e '.[tpu]'" in script


def test_run_dry_run(capsys):
  (cmd,) = dry_run(capsys, "run", "bert", "--accelerator-type=v4-128", *WHERE,
                   "--config=configs/bert_base_phase1.py", "--workdir=gs://b/base_p1", *DATA,
                   "--env=LIBTPU_INIT_ARGS=--xla_tpu_enable_async_all_gather=true")
  assert cmd[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "bert", *WHERE, "--worker=all"]
  script = remote(cmd)
  train = shlex.join(["python3", "-m", "lamb_optax.train", "--config=configs/bert_base_phase1.py",
                      "--workdir=gs://b/base_p1", *DATA])
  wrapper = (f"env LIBTPU_INIT_ARGS=--xla_tpu_enable_async_all_gather=true {train} & "
             'echo $! > "$HOME/lamb_optax_logs/train.pid"; wait $!; '
             'echo $? > "$HOME/lamb_optax_logs/train.exit"')
  assert f"nohup bash -c {shlex.quote(wrapper)} >> " in script
  assert "coordinator_address" not in script
  assert '"$HOME/lamb_optax_logs/train.log" 2>&1 < /dev/null & ' in script


def test_run_config_path_is_made_repo_relative(capsys):
  (cmd,) = dry_run(capsys, "run", "b", "--accelerator-type=v4-8", *WHERE,
                   f"--config={ROOT / 'configs' / 'tiny.py'}", "--workdir=/tmp/w",
                   "--config.micro_batch_size=4")
  assert "--config=configs/tiny.py " in remote(cmd)


def test_run_accepts_config_argument(capsys):
  (cmd,) = dry_run(capsys, "run", "b", "--accelerator-type=v4-1024", *WHERE,
                   "--config=configs/lamb_paper.py:32768", "--workdir=gs://b/w", *DATA)
  assert "--config=configs/lamb_paper.py:32768" in remote(cmd)


@pytest.mark.parametrize("argv, message", [
    (["--accelerator-type=v4-128", "--config=configs/bert_base_phase1.py",
      "--config.global_batch_size=1000"], "multiple of 64"),  # 1000 % (64*m): none fits
    (["--accelerator-type=v5litepod-256", "--config=configs/bert_base_phase1.py",
      "--config.micro_batch_size=96"], "Use micro_batch_size=64"),
    (["--accelerator-type=v4-128", "--config=configs/bert_base_phase1.py",
      "--workdir=/tmp/run"], "use --workdir=gs://BUCKET/RUN"),
    (["--accelerator-type=v4-128", "--config=configs/bert_base_phase2.py"],
     "--config.init_from=gs://"),  # the config's default init_from is /tmp/...
    (["--accelerator-type=v4-128", "--config=configs/bert_base_phase1.py",
      "--config.data.vocab_file=/data/vocab.txt"], "--config.data.vocab_file=gs://"),
    (["--accelerator-type=v4-128", "--config=configs/nope.py"], "no such file"),
    (["--accelerator-type=v4-128", "--config=configs/bert_base_phase1.py",
      "--config.global_batch_szie=4"], "no key 'global_batch_szie'"),
    (["--accelerator-type=v4-128", "--config=configs/bert_base_phase1.py",
      "--config.global_batch_size", "4"], "--config.KEY=VALUE"),
    (["--accelerator-type=v4-128", "--config=configs/bert_base_phase1.py",
      "--config.mesh.tensor=3"], "multiple of 3 devices"),
    (["--accelerator-type=v4-128", "--config=/etc/passwd.py"], "outside the repository"),
    (["--accelerator-type=v9-8", "--config=configs/bert_base_phase1.py"], "Unknown TPU"),
    # The trainer's own checks (lock, check_schedule, plan_batches), run before any gcloud call:
    (["--accelerator-type=v4-128", "--config=configs/bert_base_phase1.py",
      "--config.learning_rate=nan"], "learning_rate = nan is not a finite number"),
    (["--accelerator-type=v4-128", "--config=configs/bert_base_phase1.py",
      "--config.optimizer.name=lamm"], "Unknown optimizer 'lamm'"),
    (["--accelerator-type=v4-128", "--config=configs/bert_base_phase1.py",
      "--config.warmup_steps=100000"], "warmup_steps (100000) must lie in"),
    (["--accelerator-type=v4-128", "--config=configs/bert_base_phase1.py",
      "--config.eval_batch_size=100"], "eval_batch_size 100 must be a positive multiple"),
    (["--accelerator-type=v4-128", "--config=configs/bert_base_phase1.py",
      "--config.data.max_seq_lenght=512"], "Did you mean \"max_seq_length\""),
    (["--accelerator-type=v4-128", "--config=configs/bert_base_phase1.py",
      "--config.micro_batch_size=abc"], "invalid literal for int()"),
])
def test_run_refuses_bad_input(capsys, argv, message):
  if not any(a.startswith("--workdir") for a in argv):
    argv = [*argv, "--workdir=gs://b/w"]
  err = refused(capsys, "run", "bert", *WHERE, "--dry-run", *DATA, *argv)
  assert message in err, err


def test_run_global_batch_remedy_fits(capsys):
  # The suggested micro-batch really fits (checked by the same rule as the trainer).
  err = refused(capsys, "run", "b", "--accelerator-type=v5litepod-256", *WHERE, "--dry-run",
                "--config=configs/bert_base_phase1.py", "--workdir=gs://b/w", *DATA,
                "--config.micro_batch_size=96")
  assert "micro_batch_size=64" in err
  dry_run(capsys, "run", "b", "--accelerator-type=v5litepod-256", *WHERE,
          "--config=configs/bert_base_phase1.py", "--workdir=gs://b/w", *DATA,
          "--config.micro_batch_size=64")


def test_local_workdir_is_fine_on_one_host(capsys):
  (cmd,) = dry_run(capsys, "run", "b", "--accelerator-type=v5litepod-8", *WHERE,
                   "--config=configs/tiny.py", "--workdir=/tmp/lamb_tiny",
                   "--config.micro_batch_size=8")
  assert "--workdir=/tmp/lamb_tiny" in remote(cmd)


def test_allow_local_paths(capsys):
  dry_run(capsys, "run", "b", "--accelerator-type=v4-32", *WHERE, "--allow-local-paths",
          "--config=configs/bert_base_phase2.py", "--workdir=/nfs/run",
          "--config.micro_batch_size=8")


def test_status_logs_stop_delete_dry_run(capsys):
  describe, ssh = dry_run(capsys, "status", "bert", *WHERE)
  assert describe == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "bert", *WHERE]
  assert ssh[8] == "--worker=all" and "train.pid" in remote(ssh)
  describe, _ = dry_run(capsys, "status", "bert", *WHERE, "--queued")
  assert describe[3:5] == ["queued-resources", "describe"]

  (cmd,) = dry_run(capsys, "logs", "bert", *WHERE, "--worker=3", "--lines=20", "--follow")
  assert cmd[8] == "--worker=3"
  assert remote(cmd) == 'cd "$HOME"; tail -n 20 -F lamb_optax_logs/train.log'

  (cmd,) = dry_run(capsys, "stop", "bert", *WHERE)
  assert cmd[8] == "--worker=all" and 'kill "$P"' in remote(cmd)

  (cmd,) = dry_run(capsys, "delete", "bert", *WHERE)
  assert cmd == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "bert", *WHERE, "--quiet"]
  (cmd,) = dry_run(capsys, "delete", "bert", *WHERE, "--queued")
  assert cmd == ["gcloud", "compute", "tpus", "queued-resources", "delete", "bert", *WHERE,
                 "--force", "--quiet"]


def test_project_and_zone_from_environment(capsys, monkeypatch):
  monkeypatch.setenv("CLOUDSDK_CORE_PROJECT", "env-proj")
  monkeypatch.setenv("CLOUDSDK_COMPUTE_ZONE", "europe-west4-a")
  (cmd,) = dry_run(capsys, "delete", "bert")
  assert "--project=env-proj" in cmd and "--zone=europe-west4-a" in cmd


@pytest.mark.parametrize("argv, message", [
    (["--zone=z"], "pass --project (or set $CLOUDSDK_CORE_PROJECT)"),
    (["--project=p"], "pass --zone (or set $CLOUDSDK_COMPUTE_ZONE)"),
])
def test_dry_run_needs_project_and_zone(capsys, argv, message):
  assert message in refused(capsys, "stop", "bert", "--dry-run", *argv)


def test_overrides_only_where_they_mean_something(capsys):
  assert "takes no config overrides" in refused(capsys, "stop", "b", *WHERE, "--dry-run",
                                                "--config.seed=1")
  assert "--config.KEY=VALUE" in refused(capsys, "stop", "b", *WHERE, "--dry-run", "--bogus")


def _fake_gcloud(tmp_path, project="", zone=""):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "gcloud_calls.txt"
  script = bin_dir / "gcloud"
  script.write_text(
      "#!/bin/sh\n"
      f'printf "%s\\n" "$*" >> {shlex.quote(str(log))}\n'
      'if [ "$1 $2" = "config get-value" ]; then\n'
      f'  case "$3" in project) echo {shlex.quote(project)};; '
      f'compute/zone) echo {shlex.quote(zone)};; esac\n'
      "fi\n")
  script.chmod(0o755)
  return bin_dir, log


def test_missing_gcloud_is_refused(capsys, monkeypatch, tmp_path):
  monkeypatch.setenv("PATH", str(tmp_path))  # no gcloud here
  err = refused(capsys, "delete", "bert", *WHERE)
  assert "gcloud is not on PATH" in err and "--dry-run" in err


def test_real_run_uses_gcloud_config_defaults(capsys, monkeypatch, tmp_path):
  bin_dir, log = _fake_gcloud(tmp_path, project="cfg-proj", zone="us-east5-a")
  monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  assert tpu_pod.main(["delete", "bert"]) == 0
  calls = log.read_text().splitlines()
  assert calls == ["config get-value project", "config get-value compute/zone",
                   "compute tpus tpu-vm delete bert --zone=us-east5-a --project=cfg-proj --quiet"]


def test_real_run_refuses_without_defaults_before_acting(capsys, monkeypatch, tmp_path):
  bin_dir, log = _fake_gcloud(tmp_path)
  monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  err = refused(capsys, "delete", "bert")
  assert "gcloud config set project" in err
  assert all(c.startswith("config get-value") for c in log.read_text().splitlines())


def test_bad_batch_refused_before_any_gcloud_call(capsys, monkeypatch, tmp_path):
  bin_dir, log = _fake_gcloud(tmp_path, project="p", zone="z")
  monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  refused(capsys, "run", "b", "--accelerator-type=v4-128", "--config=configs/bert_base_phase1.py",
          "--workdir=gs://b/w", *DATA, "--config.global_batch_size=1000")
  assert not log.exists()


# The remote snippets, executed by bash in a fake $HOME with a fake python3 that just sleeps.
def _bash(script, home, path):
  return subprocess.run(["bash", "-c", script], env={"HOME": str(home), "PATH": path},
                        capture_output=True, text=True, timeout=60, check=False)


def test_remote_run_status_stop_scripts(tmp_path):
  home = tmp_path / "home"
  (home / "lamb_optax").mkdir(parents=True)
  fake = tmp_path / "fakebin"
  fake.mkdir()
  (fake / "python3").write_text('#!/bin/sh\necho "trainer args: $*"\nexec sleep 60\n')
  (fake / "python3").chmod(0o755)
  path = f"{fake}{os.pathsep}/usr/bin{os.pathsep}/bin"
  where = ("z", "p")
  (run,) = pod.run_commands("b", *where, "configs/tiny.py", "gs://b/w",
                            ["--config.data.source=it's $HOME"], ["FOO=1"])
  (status,) = pod.status_commands("b", *where)[1:]
  (stop,) = pod.stop_commands("b", *where, grace_seconds=5)
  (logs,) = pod.logs_commands("b", *where, lines=5)

  r = _bash(remote(run), home, path)
  assert r.returncode == 0 and "started pid" in r.stdout, r.stderr
  pid = int((home / "lamb_optax_logs" / "train.pid").read_text())
  try:
    log = home / "lamb_optax_logs" / "train.log"
    for _ in range(100):
      if "trainer args" in log.read_text():
        break
      time.sleep(0.05)
    text = log.read_text()
    assert ("trainer args: -m lamb_optax.train --config=configs/tiny.py --workdir=gs://b/w "
            "--config.data.source=it's $HOME") in text  # quoting survives the remote shell
    assert "=== " in text
    assert "trainer running" in _bash(remote(status), home, path).stdout
    assert "trainer args" in _bash(remote(logs), home, path).stdout
    again = _bash(remote(run), home, path)  # a second run refuses while one is running
    assert again.returncode == 1 and "already running" in again.stderr
    r = _bash(remote(stop), home, path)
    assert f"stopped pid {pid}" in r.stdout, r
  finally:
    _kill_quietly(pid)
  assert "no trainer running" in _bash(remote(status), home, path).stdout
  assert "no trainer running" in _bash(remote(stop), home, path).stdout


def test_remote_run_without_setup(tmp_path):
  (run,) = pod.run_commands("b", "z", "p", "configs/tiny.py", "/tmp/w")
  r = _bash(remote(run), tmp_path, "/usr/bin:/bin")
  assert r.returncode == 1 and "run setup first" in r.stderr


def test_help_runs():
  r = subprocess.run([sys.executable, str(ROOT / "scripts" / "tpu_pod.py"), "--help"],
                     capture_output=True, text=True, check=False, timeout=60)
  assert r.returncode == 0 and "create" in r.stdout and "delete" in r.stdout


# The package functions the launcher uses instead of copies of its own.
def test_config_load_is_the_trainers_parsing(monkeypatch):
  monkeypatch.chdir(ROOT)
  config = config_lib.load("configs/lamb_paper.py:32768", [
      "--config.micro_batch_size=8", "--config.model.overrides.hidden_dropout=0.0",
      "--config.data.whole_word_mask", "--config.mesh.tensor", "2"])  # absl's own syntax
  assert (config.global_batch_size, config.micro_batch_size) == (32768, 8)
  assert config.model.overrides.hidden_dropout == 0.0 and config.data.whole_word_mask
  assert config.mesh.tensor == 2
  assert not config.is_locked  # as the trainer receives it; the trainer's lock() comes next
  config_lib.lock(config)


@pytest.mark.parametrize("config_arg, overrides, message", [
    ("configs/nope.py", [], "no such file"),
    ("configs/tiny.py", ["--config.global_batch_szie=4"],
     "no key 'global_batch_szie'. Did you mean \"global_batch_size\""),
    ("configs/tiny.py", ["--config.dta.source=x"], "no key 'dta.source'"),
    ("configs/tiny.py", ["--config.optimizer.kwargs.b11=0.9"], "no key 'optimizer.kwargs.b11'"),
    ("configs/tiny.py", ["--config.learning_rate=abc"], "could not convert string to float"),
    ("configs/tiny.py", ["--config.mesh.data=2.5"], "--config.KEY=VALUE"),
    ("configs/tiny.py", ["--config.global_batch_size"], "Missing value"),
    ("configs/tiny.py", ["--bogus=1"], "Unknown command line flag 'bogus'"),
    ("configs/tiny.py", ["stray"], "Unexpected arguments ['stray']"),
])
def test_config_load_refuses(monkeypatch, config_arg, overrides, message):
  monkeypatch.chdir(ROOT)
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.load(config_arg, overrides)
  assert message in str(e.value)


@pytest.mark.parametrize("mesh, devices, want", [
    ({"data": -1}, 64, 64), ({"data": -1, "fsdp": 1, "tensor": 1}, 8, 8),
    ({"data": -1, "tensor": 4}, 512, 128), ({"data": 2, "fsdp": -1, "tensor": 2}, 16, 8),
    ({"data": 4, "fsdp": 2, "tensor": 1}, 8, 8), ({"tensor": -1}, 4, 1),
    ({"data": -1, "tensor": 3}, 64, "multiple of 3 devices"),
    ({"data": -1, "fsdp": -1}, 8, "at most one axis"),
    ({"data": 2}, 8, "uses 2 devices, but there are 8"),
    ({"data": 0, "fsdp": -1}, 8, "positive"),
    ({"dta": -1}, 8, "Unknown mesh axes ['dta']"),
])
def test_data_parallel_size(mesh, devices, want):
  if isinstance(want, int):
    assert sharding.data_parallel_size(mesh, devices) == want
  else:
    with pytest.raises(ValueError, match=re.escape(want)):
      sharding.data_parallel_size(mesh, devices)


def test_run_and_create_compile_for_the_slice_first(capsys, compile_checks):
  dry_run(capsys, "run", "b", "--accelerator-type=v4-128", *WHERE, "--workdir=gs://b/r",
          "--config=configs/bert_base_phase1.py", *DATA)
  dry_run(capsys, "create", "b", "--accelerator-type=v5p-128", *WHERE,
          "--config=configs/bert_base_phase1.py")
  dry_run(capsys, "create", "b", "--accelerator-type=v5p-128", *WHERE)  # no config: no check
  dry_run(capsys, "run", "b", "--accelerator-type=v4-128", *WHERE, "--workdir=gs://b/r",
          "--config=configs/bert_base_phase1.py", "--skip-compile-check", *DATA)
  assert compile_checks == [("configs/bert_base_phase1.py", "v4-128", DATA),
                            ("configs/bert_base_phase1.py", "v5p-128", [])]


def test_compile_check_command_and_refusal(monkeypatch, capsys):
  slice_ = accelerators.parse_accelerator("v4-8")
  argv = pod_checks.compile_check_argv("configs/tiny.py", slice_, ["--config.micro_batch_size=8"])
  assert argv[1:3] == ["-m", "lamb_optax.train"] and argv[3].endswith("configs/tiny.py")
  assert argv[4:] == ["--compile_for=v4-8", "--config.micro_batch_size=8"]
  for rc, message in ((1, "does not fit v4-8"), (2, "compile check for v4-8 failed")):
    monkeypatch.setattr(pod_checks.subprocess, "run",
                        lambda *a, rc=rc, **k: subprocess.CompletedProcess(
                            a, rc, stdout="DOES NOT FIT: lower micro_batch_size", stderr=""))
    with pytest.raises(pod.UsageError, match=message):
      _compile_check("configs/tiny.py", slice_)
  assert "micro_batch_size" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["delete", "--", "--zone=elsewhere"], "TPU name '--zone=elsewhere'"),
    (["delete", "-5"], "TPU name '-5'"),
    (["delete", "Bert_Base"], "lowercase letters"),
    (["stop", "bert", "--grace-seconds=-5"], "--grace-seconds=-5: must be >= 0"),
])
def test_names_and_grace_seconds_are_checked(capsys, argv, message):
  assert message in refused(capsys, *argv, *WHERE, "--dry-run")


def _fake_trainer(tmp_path, body):
  """A fake $HOME with ~/lamb_optax and a python3 that runs ``body`` (sh)."""
  home = tmp_path / "home"
  (home / "lamb_optax").mkdir(parents=True)
  fake = tmp_path / "fakebin"
  fake.mkdir()
  (fake / "python3").write_text("#!/bin/sh\n" + body)
  (fake / "python3").chmod(0o755)
  return home, f"{fake}{os.pathsep}/usr/bin{os.pathsep}/bin"


def _wait_for_file(path, timeout=30):
  deadline = time.time() + timeout
  while not path.exists() and time.time() < deadline:
    time.sleep(0.05)
  return path.exists()


@pytest.mark.parametrize("body, code, says", [
    # As the trainer does on SIGTERM: save, one line, exit 143.
    ("trap 'echo \"Stopped by SIGTERM after step 7: checkpoint of step 7 saved in /w; run the "
     "same command to resume (exit status 143).\"; exit 143' TERM\n"
     "while :; do sleep 0.1; done\n", 143,
     ["stopped pid", "stopped by SIGTERM (exit status 143): preempted, resumable",
      "Stopped by SIGTERM after step 7"]),
    ("trap '' TERM\nwhile :; do sleep 0.1; done\n", None,  # ignores SIGTERM: SIGKILLed
     ["killed pid", "without a final save"]),
])
def test_stop_reports_how_the_trainer_ended(tmp_path, body, code, says):
  home, path = _fake_trainer(tmp_path, body)
  (run,) = pod.run_commands("b", "z", "p", "configs/tiny.py", "/tmp/w")
  (stop,) = pod.stop_commands("b", "z", "p", grace_seconds=2)
  (status,) = pod.status_commands("b", "z", "p")[1:]
  r = _bash(remote(run), home, path)
  assert r.returncode == 0 and "started pid" in r.stdout, r.stderr
  pid = int((home / "lamb_optax_logs" / "train.pid").read_text())
  try:
    time.sleep(0.5)  # the trap is set
    r = _bash(remote(stop), home, path)
  finally:
    _kill_quietly(pid)
  for text in says:
    assert text in r.stdout, r.stdout
  if code is not None:
    assert (home / "lamb_optax_logs" / "train.exit").read_text().strip() == str(code)
    assert "preempted, resumable" in _bash(remote(status), home, path).stdout


def test_status_reports_a_failed_and_a_finished_trainer(tmp_path):
  for body, says in (("exit 1\n", "the trainer failed (exit status 1); see logs"),
                     ("exit 0\n", "the trainer finished (exit status 0)")):
    home, path = _fake_trainer(tmp_path / body.split()[1], body)
    (run,) = pod.run_commands("b", "z", "p", "configs/tiny.py", "/tmp/w")
    (status,) = pod.status_commands("b", "z", "p")[1:]
    assert _bash(remote(run), home, path).returncode == 0
    assert _wait_for_file(home / "lamb_optax_logs" / "train.exit")
    assert says in _bash(remote(status), home, path).stdout


@pytest.mark.slow
def test_stop_preempts_a_real_trainer_and_run_resumes_it_bit_identically(
    tmp_path, pretraining_data_dir):
  """The launcher's own remote scripts, run for real on this machine (a fake $HOME whose
  ~/lamb_optax is this repository, python3 this interpreter): `stop` SIGTERMs the trainer at
  step 3 or later, the trainer saves that step and exits 143, `stop` says it is resumable; the
  same `run` resumes it and its losses equal an uninterrupted run's, bit for bit."""
  import trainer_runs  # pylint: disable=g-import-not-at-top
  home, path = _fake_trainer(tmp_path, f'exec {shlex.quote(sys.executable)} "$@"\n')
  (home / "lamb_optax").rmdir()
  (home / "lamb_optax").symlink_to(ROOT)
  flags = {**trainer_runs.SMALL, "micro_batch_size": 4, "data.data_dir": pretraining_data_dir}
  overrides = [f"--config.{k}={v}" for k, v in flags.items()]
  env = [f"{k}={v}" for k, v in trainer_runs.environment(4).items()
         if k in ("XLA_FLAGS", "JAX_PLATFORMS", "PYTHONPATH", "JAX_COMPILATION_CACHE_DIR",
                  "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")]
  reference, workdir = str(tmp_path / "reference"), str(tmp_path / "run")
  trainer_runs.run(reference, {"micro_batch_size": 4}, pretraining_data_dir, devices=4)
  (run,) = pod.run_commands("b", "z", "p", "configs/tiny.py", workdir, overrides, env)
  (stop,) = pod.stop_commands("b", "z", "p", grace_seconds=120)
  exit_file = home / "lamb_optax_logs" / "train.exit"
  assert _bash(remote(run), home, path).returncode == 0
  pid = int((home / "lamb_optax_logs" / "train.pid").read_text())
  try:
    deadline = time.time() + 600
    while time.time() < deadline and not exit_file.exists() and not (
        os.path.exists(os.path.join(workdir, "metrics.jsonl"))
        and max(trainer_runs.losses(workdir), default=0) >= 3):
      time.sleep(0.05)
    assert not exit_file.exists(), (home / "lamb_optax_logs" / "train.log").read_text()[-3000:]
    r = _bash(remote(stop), home, path)
  finally:
    _kill_quietly(pid)
  assert "preempted, resumable" in r.stdout, r.stdout
  saved = max(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())
  assert saved == max(trainer_runs.losses(workdir)) and saved < 8
  assert f"Stopped by SIGTERM after step {saved}: checkpoint of step {saved} saved" in r.stdout
  exit_file.unlink()
  assert _bash(remote(run), home, path).returncode == 0
  assert _wait_for_file(exit_file, timeout=600) and exit_file.read_text().strip() == "0"
  assert trainer_runs.losses(workdir) == trainer_runs.losses(reference)
