"""Data-side reliability: --overwrite deletes only our own datasets, interrupted builds are cleaned
up, input is bounded, flags are checked up front, vocabularies must match, Grain workers die
with their parent."""

import copy
import fcntl
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lamb_optax import data
from lamb_optax.data import sources
from lamb_optax.data import storage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _example():
  return {"input_ids": np.arange(8, dtype=np.int32), "input_mask": np.ones(8, np.int32),
          "segment_ids": np.zeros(8, np.int32), "masked_lm_positions": np.array([1, 2], np.int32),
          "masked_lm_ids": np.array([5, 6], np.int32),
          "masked_lm_weights": np.ones(2, np.float32), "next_sentence_labels": np.int32(0)}


def _write(out, **kwargs):
  return storage.write_pretraining_dataset(
      {"train": [_example()] * 3}, str(out), max_seq_length=8, max_predictions_per_seq=2,
      progress=False, **kwargs)


def test_overwrite_replaces_only_our_own_dataset(tmp_path):
  out = tmp_path / "ds"
  _write(out)
  assert _write(out, overwrite=True) == {"train": 3}  # our own dataset: replaced
  (out / "notes.txt").write_text("mine")
  with pytest.raises(FileExistsError, match=r"refuses to replace .*notes\.txt"):
    _write(out, overwrite=True)
  assert (out / "notes.txt").read_text() == "mine" and (out / "dataset_info.json").exists()


@pytest.mark.parametrize("contents", [{"corpus.txt": "a sentence."},
                                      {"sub/deep.txt": "x", ".bashrc": "y"}])
def test_overwrite_refuses_any_other_directory(tmp_path, contents):
  # The input corpus's directory, ".", $HOME: anything that is not only our dataset survives.
  home = tmp_path / "home"
  for name, text in contents.items():
    (home / name).parent.mkdir(parents=True, exist_ok=True)
    (home / name).write_text(text)
  with pytest.raises(FileExistsError, match="not \\(only\\) a pretraining dataset"):
    _write(home, overwrite=True)
  for name, text in contents.items():
    assert (home / name).read_text() == text
  assert not [n for n in os.listdir(tmp_path) if "incomplete" in n]


def test_overwrite_accepts_an_empty_directory(tmp_path):
  (tmp_path / "empty").mkdir()
  assert _write(tmp_path / "empty", overwrite=True) == {"train": 3}


def _cli_run(args):
  """scripts/create_pretraining_data.py's run() on parsed flags (no global FLAGS)."""
  from absl import flags as absl_flags
  sys.path.insert(0, os.path.join(ROOT, "scripts"))
  try:
    import create_pretraining_data as cli  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  fv = absl_flags.FlagValues()
  for flag in absl_flags.FLAGS.get_key_flags_for_module(cli):
    fv[flag.name] = copy.deepcopy(flag)
  fv(["prog", *args])
  return cli.run(fv)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  d = tmp_path_factory.mktemp("corpus")
  (d / "part.txt").write_text("The first sentence.\nThe second one.\n\nAnother document.\n"
                              "With two lines.\n", encoding="utf-8")
  data.save_vocab(data.train_wordpiece(["the first sentence another document"], 200),
                  str(d / "vocab.txt"))
  return d


def _flags(corpus, out, **overrides):
  flags = {"input_file": f"{corpus}/part.txt", "output_dir": str(out),
           "vocab_file": str(corpus / "vocab.txt"), "max_seq_length": 16,
           "max_predictions_per_seq": 2} | overrides
  return [f"--{k}={v}" for k, v in flags.items()]


def test_cli_overwrite_refuses_the_input_directory(corpus):
  before = sorted(os.listdir(corpus))
  with pytest.raises(FileExistsError, match=r"part\.txt, vocab\.txt"):
    _cli_run(_flags(corpus, corpus, overwrite=True))
  assert sorted(os.listdir(corpus)) == before


@pytest.mark.parametrize("flag,value,match", [
    ("window_documents", 0, "window_documents must be >= 1"),
    ("num_workers", 0, "num_workers must be >= 1"),
    ("num_workers", -2, "num_workers must be >= 1"),
])
def test_cli_checks_counts_before_any_work(corpus, tmp_path, flag, value, match):
  with pytest.raises(ValueError, match=match):
    _cli_run(_flags(corpus, tmp_path / "out", **{flag: value}))
  assert os.listdir(tmp_path) == []


def test_stale_incomplete_builds_are_removed_live_ones_kept(tmp_path):
  def build_dir(name, locked):
    d = tmp_path / name
    d.mkdir()
    lock = open(d / storage.BUILD_LOCK_FILE, "w")
    if locked:  # held through another open file: as a live builder would
      fcntl.flock(lock, fcntl.LOCK_EX)
    return lock

  dead = build_dir(".ds.incomplete-dead", locked=False)
  live = build_dir(".ds.incomplete-live", locked=True)
  (tmp_path / ".ds.incomplete-foreign").mkdir()  # no lock file: not ours, left alone
  (tmp_path / ".other.incomplete-x").mkdir()
  _write(tmp_path / "ds")
  left = sorted(n for n in os.listdir(tmp_path) if "incomplete" in n)
  assert left == [".ds.incomplete-foreign", ".ds.incomplete-live", ".other.incomplete-x"]
  dead.close()
  live.close()


def test_a_build_starting_beside_another_never_removes_it(tmp_path, monkeypatch):
  # The worst interleaving, made deterministic: a second builder sweeps for stale builds at
  # the instant the first takes its lock. The first build's directory must survive it.
  real_flock = fcntl.flock

  def flock_after_a_sweep(file, operation):
    if operation == fcntl.LOCK_EX:  # the builder taking its lock (the sweep uses LOCK_NB)
      storage._remove_stale_builds(str(tmp_path), ".ds.incomplete-")
    return real_flock(file, operation)

  monkeypatch.setattr(storage.fcntl, "flock", flock_after_a_sweep)
  with storage.build_directory(str(tmp_path), ".ds.incomplete-") as build:
    assert os.path.isdir(build)
    storage._remove_stale_builds(str(tmp_path), ".ds.incomplete-")  # a sweep while it builds
    assert sorted(os.listdir(build)) == [storage.BUILD_LOCK_FILE]
  assert os.listdir(tmp_path) == []


def test_a_huge_line_is_refused_without_reading_it_whole(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, "MAX_LINE_BYTES", 1000)
  path = tmp_path / "book.txt"
  path.write_text("A short line.\n" + "word " * 10_000 + "\n")
  with pytest.raises(ValueError, match=r"Line 2 of .*book\.txt is longer than 1,000 bytes"):
    list(data.read_text_documents([str(path)]))


def test_check_vocab_matches(tmp_path):
  _write(tmp_path / "ds", metadata={"vocab_size": 8192})
  metadata = data.dataset_metadata(str(tmp_path / "ds"))
  data.check_vocab_matches(metadata, 8192)
  with pytest.raises(ValueError, match=r"vocabulary of 8192 ids, but the run uses 1000.*NaN"):
    data.check_vocab_matches(metadata, 1000, dataset=str(tmp_path / "ds"))
  with pytest.raises(ValueError, match="other words"):
    data.check_vocab_matches(metadata, 30522)
  data.check_vocab_matches(metadata, 8192 + 64, exact=False)  # a padded embedding table
  data.check_vocab_matches({}, 1000)  # old datasets without the size: not checked
  source = data.load_pretraining_dataset(str(tmp_path / "ds"), "train")
  with pytest.raises(ValueError):
    data.check_vocab_matches(source.metadata, 1000)


_WORKER_PARENT = textwrap.dedent("""
    import sys, time
    import numpy as np
    from lamb_optax import data
    source = [{"input_ids": np.full(4, i, np.int32)} for i in range(64)]
    it = iter(data.train_batches(source, batch_size=2, seed=0, shard_index=0, shard_count=1,
                                 worker_count=2))
    next(it)
    print("ready", flush=True)
    time.sleep(600)
""")


@pytest.mark.slow  # a process with Grain workers, SIGKILLed
def test_grain_workers_die_with_a_killed_parent():
  psutil = pytest.importorskip("psutil")
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             JAX_PLATFORMS="cpu")
  parent = subprocess.Popen([sys.executable, "-c", _WORKER_PARENT], stdout=subprocess.PIPE,
                            text=True, env=env)
  workers = []
  try:
    assert parent.stdout.readline().strip() == "ready"
    workers = psutil.Process(parent.pid).children(recursive=True)
    assert workers, "expected Grain worker processes"
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"Grain workers outlived their killed parent: {alive}"
  finally:
    if parent.poll() is None:
      parent.kill()
    for worker in workers:  # only on failure: do not leave them behind either
      if worker.is_running():
        worker.kill()
