"""GLUE: metrics against scikit-learn/SciPy, exact from batch sums; the TSV and TFDS readers."""

import re

import numpy as np
import pytest

from lamb_optax.tasks import glue
from lamb_optax.tasks import glue_metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics")
stats = pytest.importorskip("scipy.stats")


def _counts(predicted, labels):
  p, y = predicted == 1, labels == 1
  return dict(tp=np.sum(p & y), fp=np.sum(p & ~y), fn=np.sum(~p & y), tn=np.sum(~p & ~y))


@pytest.mark.parametrize("seed", range(5))
def test_f1_and_matthews_match_sklearn(seed):
  rng = np.random.default_rng(seed)
  labels, predicted = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
  c = _counts(predicted, labels)
  assert glue_metrics.f1_from_counts(c["tp"], c["fp"], c["fn"]) == pytest.approx(
      sklearn_metrics.f1_score(labels, predicted))
  assert glue_metrics.matthews_from_counts(**c) == pytest.approx(
      sklearn_metrics.matthews_corrcoef(labels, predicted))


def test_degenerate_confusion_matrices_give_zero_as_sklearn():
  labels, predicted = np.array([0, 0, 1, 1]), np.zeros(4, int)  # never predicts positive
  c = _counts(predicted, labels)
  assert glue_metrics.f1_from_counts(c["tp"], c["fp"], c["fn"]) == sklearn_metrics.f1_score(
      labels, predicted, zero_division=0) == 0.0
  assert glue_metrics.matthews_from_counts(**c) == sklearn_metrics.matthews_corrcoef(
      labels, predicted) == 0.0


def test_pearson_and_spearman_match_scipy_with_ties():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 6, 300).astype(float)  # STS-B-like scores with many ties
  x = y + rng.normal(0, 1.5, 300)
  x[:20] = 1.0  # ties in the predictions too
  assert glue_metrics.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
  assert glue_metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


def test_metrics_from_batch_sums_equal_whole_set_metrics():
  """Sums added over uneven batches (with padding weight 0) give the whole-set metrics."""
  import jax.numpy as jnp

  from lamb_optax.models import bert_heads
  rng = np.random.default_rng(1)
  n = 103
  logits, labels = rng.normal(size=(n, 2)).astype(np.float32), rng.integers(0, 2, n)
  scores, targets = rng.uniform(0, 5, n).astype(np.float32), rng.uniform(0, 5, n)
  totals, reg_totals = {}, {}
  for start in range(0, n, 32):  # the last batch padded with weight 0
    rows = slice(start, start + 32)
    k = len(labels[rows])
    pad = lambda a, k=k: np.concatenate([a, np.zeros((32 - k, *a.shape[1:]), a.dtype)])
    weight = pad(np.ones(k, np.float32))
    sums = bert_heads.cross_entropy_and_confusion_sums(
        jnp.asarray(pad(logits[rows])), pad(labels[rows]), weight)
    reg = bert_heads.regression_sums(jnp.asarray(pad(scores[rows])),
                                     jnp.asarray(pad(targets[rows].astype(np.float32))),
                                     weight, center=2.5)
    totals = {k2: totals.get(k2, 0.0) + float(v) for k2, v in sums.items()}
    reg_totals = {k2: reg_totals.get(k2, 0.0) + float(v) for k2, v in reg.items()}
  summary = glue_metrics.classification_summary(totals, ("f1", "matthews"))
  predicted = logits.argmax(-1)
  assert summary["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(labels, predicted))
  assert summary["f1"] == pytest.approx(sklearn_metrics.f1_score(labels, predicted))
  assert summary["matthews"] == pytest.approx(sklearn_metrics.matthews_corrcoef(labels, predicted))
  reg_summary = glue_metrics.regression_summary(reg_totals)
  assert reg_summary["pearson"] == pytest.approx(stats.pearsonr(scores, targets)[0], abs=1e-5)


def test_score_of_predictions():
  outputs = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
  metrics = glue.score(glue.glue_task("mrpc"), outputs, [1, 0, 0, 0])
  assert metrics["accuracy"] == 0.75 and metrics["f1"] == pytest.approx(2 / 3)


def test_unknown_task_lists_the_valid_ones():
  with pytest.raises(ValueError, match="choose one of cola, mnli_matched, mnli_mismatched, mrpc"):
    glue.glue_task("qqpp")


def test_tsv_readers_follow_googles_columns(tmp_path):
  (tmp_path / "dev.tsv").write_text(
      "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
      "1\t1\t2\tThe cat sat.\tA cat was sitting.\n0\t3\t4\tIt rains.\tStocks fell.\n")
  texts, labels = glue.read_tsv(glue.glue_task("mrpc"), str(tmp_path / "dev.tsv"))
  assert texts == [("The cat sat.", "A cat was sitting."), ("It rains.", "Stocks fell.")]
  assert labels == [1, 0]
  (tmp_path / "rte.tsv").write_text("index\tsentence1\tsentence2\tlabel\n"
                                    "0\tA man runs.\tA person moves.\tentailment\n"
                                    "1\tA man runs.\tNobody moves.\tnot_entailment\n")
  assert glue.read_tsv(glue.glue_task("rte"), str(tmp_path / "rte.tsv"))[1] == [0, 1]
  cola = "gj04\t1\t\tThe book was read.\ngj04\t0\t*\tBook the read was.\n"
  (tmp_path / "cola.tsv").write_text(cola)  # CoLA's dev.tsv has no header
  texts, labels = glue.read_tsv(glue.glue_task("cola"), str(tmp_path / "cola.tsv"))
  assert texts[1] == ("Book the read was.",) and labels == [1, 0]
  with pytest.raises(ValueError, match="finetune.data_dir must hold"):
    glue.read_tsv(glue.glue_task("mrpc"), str(tmp_path / "missing.tsv"))


def test_labels_out_of_a_glue_tasks_range_are_refused(tmp_path):
  """6-class data in SST-2's slot made the loss NaN; now it names the line and the way out."""
  (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1\nodd\t5\n")
  with pytest.raises(ValueError, match=r"train.tsv line 3: label '5' is not one of this GLUE "
                                       r"task's classes .*text_classification"):
    glue.read_tsv(glue.glue_task("sst2"), str(tmp_path / "train.tsv"))


@pytest.mark.parametrize("label", ["7", "maybe", "-1", "1.0", ""])
def test_sst2_labels_outside_its_classes_name_file_line_value_and_classes(tmp_path, label):
  (tmp_path / "train.tsv").write_text(f"sentence\tlabel\ngood\t1\nodd\t{label}\n")
  with pytest.raises(ValueError, match=rf"train.tsv line 3: label '{re.escape(label)}' is not "
                                       r"one of this GLUE task's classes \['negative', "
                                       r"'positive'\] \(or 0..1\)"):
    glue.read_tsv(glue.glue_task("sst2"), str(tmp_path / "train.tsv"))


@pytest.mark.parametrize("score", ["maybe", "5.5", "-0.5", "nan", "inf", ""])
def test_stsb_scores_must_be_numbers_in_range(tmp_path, score):
  """A word or an out-of-range score failed with a bare float() error, or trained on it."""
  header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
  row = "0\tmain\tx\t2012\t0\tnone\tnone\tA man runs.\tA man moves."
  (tmp_path / "dev.tsv").write_text(f"{header}\tscore\n{row}\t3.8\n{row}\t{score}\n")
  with pytest.raises(ValueError, match=rf"dev.tsv line 3: label '{re.escape(score)}' is not an "
                                       r"STS-B similarity score, a number in \[0, 5\]"):
    glue.read_tsv(glue.glue_task("stsb"), str(tmp_path / "dev.tsv"))
  (tmp_path / "dev.tsv").write_text(f"{header}\tscore\n{row}\t3.8\n{row}\t5\n")
  assert glue.read_tsv(glue.glue_task("stsb"), str(tmp_path / "dev.tsv"))[1] == [3.8, 5.0]


def _rows(task):
  return [{**{k: f"text {k} {i}".encode() for k in task.text_keys},
           "label": (i % 5) * 1.0 if not task.labels else i % len(task.labels), "idx": i}
          for i in range(7)]


def _check(task, rows, texts, labels):
  assert len(texts) == 7 and texts[3][0] == f"text {task.text_keys[0]} 3"
  assert len(texts[3]) == len(task.text_keys) and labels[3] == rows[3]["label"]


@pytest.mark.parametrize("name", ["mrpc", "stsb", "mnli_mismatched", "cola"])
def test_tfds_reader_with_mock_data(name):
  tfds = pytest.importorskip("tensorflow_datasets")
  try:
    tfds.builder_cls("glue")
  except Exception:  # pylint: disable=broad-except
    pytest.skip("TFDS's glue builder code needs TensorFlow (prepared data reads without it)")
  task = glue.glue_task(name)
  rows = _rows(task)
  with tfds.testing.mock_data(as_data_source_fn=lambda *a, **k: rows):
    _check(task, rows, *glue.read_tfds(task, task.eval_split))


@pytest.mark.parametrize("name", ["mrpc", "stsb", "mnli_mismatched", "qnli"])
def test_tfds_reader_reads_the_named_split_and_features(name, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  task, calls = glue.glue_task(name), []
  rows = _rows(task)

  def data_source(tfds_name, split, data_dir, download):
    calls.append((tfds_name, split, data_dir, download))
    return rows
  monkeypatch.setattr(tfds, "data_source", data_source)
  _check(task, rows, *glue.read_tfds(task, task.eval_split, "/prepared"))
  assert calls == [(task.tfds_name, task.eval_split, "/prepared", False)]


def test_unprepared_tfds_says_how_to_prepare(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(ValueError, match="tfds build glue/rte"):
    glue.read_tfds(glue.glue_task("rte"), "validation", str(tmp_path))


def test_tfds_labels_outside_the_classes_are_refused(monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  task = glue.glue_task("sst2")
  rows = _rows(task)
  rows[4]["label"] = np.int64(-1)  # TFDS's GLUE test splits carry no labels: -1
  monkeypatch.setattr(tfds, "data_source", lambda *args, **kwargs: rows)
  with pytest.raises(ValueError, match=r"TFDS glue/sst2 split 'validation' row 4: label '-1' is "
                                       r"not one of this GLUE task's classes"):
    glue.read_tfds(task, task.eval_split)
