"""Schedules against their formulas in NumPy, and the paper's LR/warmup table row by row."""

import jax
import numpy as np
import pytest

from lamb_optax import schedules

# You et al. 2020, BERT-Large LAMB runs (not verified against the paper; docs/lamb.md):
# (batch, x in lr = 5 / (2^x · 10^3), warmup ratio)
PAPER_TABLE = [
    (512, 3.0, 1 / 320),
    (1024, 2.5, 1 / 160),
    (2048, 2.0, 1 / 80),
    (4096, 1.5, 1 / 40),
    (8192, 1.0, 1 / 20),
    (16384, 0.5, 1 / 10),
    (32768, 0.0, 1 / 5),
]


@pytest.mark.parametrize("batch, x, warmup_ratio", PAPER_TABLE)
def test_every_row_of_the_paper_table(batch, x, warmup_ratio):
  assert schedules.paper_learning_rate(batch) == pytest.approx(5 / (2 ** x * 1e3), rel=1e-12)
  assert schedules.paper_warmup_ratio(batch) == pytest.approx(warmup_ratio, rel=1e-12)


def test_same_warmup_steps_at_fixed_epochs():
  # Table 1's step counts: 1,000k at 512 halving per doubling; ≈3,125 warmup steps each.
  for batch, _, _ in PAPER_TABLE:
    steps = 1_000_000 * 512 // batch
    assert schedules.paper_warmup_ratio(batch) * steps == pytest.approx(3125)


def test_square_root_rule_between_and_beyond():
  for batch in (768, 3000, 65536):
    assert schedules.paper_learning_rate(batch) == pytest.approx(
        schedules.paper_learning_rate(512) * np.sqrt(batch / 512))


def reference_warmup_poly(t, peak, total, warmup, power, end=0.0):
  if t < warmup:
    return peak * t / warmup
  return end + (peak - end) * max(0.0, 1 - t / total) ** power


@pytest.mark.parametrize("power", [1.0, 0.5, 2.0])
def test_warmup_polynomial_decay_over_run_matches_formula_under_jit(power):
  s = schedules.warmup_polynomial_decay_over_run(3e-3, total_steps=50, warmup_steps=7,
                                                 power=power, end_value=1e-4)
  ts = np.arange(0, 60)
  actual = np.asarray(jax.jit(jax.vmap(s))(ts))
  expected = [reference_warmup_poly(t, 3e-3, 50, 7, power, 1e-4) for t in ts]
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-9)
  assert actual[0] == 0.0 and actual[-1] == pytest.approx(1e-4)


def test_two_phase_rewarms_at_its_own_start():
  s = schedules.bert_two_phase_schedule(6e-3, 100, 30, 4e-3, 40, 10, power=0.5, phase2_start=90)
  ts = np.arange(0, 140)
  actual = np.asarray(jax.jit(jax.vmap(s))(ts))
  expected = [reference_warmup_poly(t, 6e-3, 100, 30, 0.5) if t < 90
              else reference_warmup_poly(t - 90, 4e-3, 40, 10, 0.5) for t in ts]
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-9)
  assert actual[90] == 0.0 and actual[95] == pytest.approx(2e-3)  # half-way up phase 2's warmup


def test_paper_schedule_uses_the_table_lr_and_warmup():
  # Decay runs over the whole run (Google's/NVIDIA's BERT code), so the warmup ramps towards the
  # table's lr and the decay continues from peak·(1 − warmup/total).
  peak = 5 / (2 ** 1.5 * 1e3)
  s = schedules.paper_schedule(4096, total_steps=125_000)
  assert float(s(3124)) == pytest.approx(peak * 3124 / 3125, rel=1e-6)
  assert float(s(3125)) == pytest.approx(peak * (1 - 3125 / 125_000), rel=1e-6)


def reference_after_warmup(t, peak, total, warmup, kind, power=2.0, end=0.0,
                           boundaries=(), factor=0.1):
  """The vision schedules in plain Python: decay measured from the end of the warmup."""
  if t < warmup:
    return peak * t / warmup
  frac = min(1.0, (t - warmup) / (total - warmup))
  if kind == "polynomial":
    return end + (peak - end) * (1 - frac) ** power
  if kind == "cosine":
    return end + (peak - end) * 0.5 * (1 + np.cos(np.pi * frac))
  return peak * factor ** sum(t >= b for b in boundaries)


@pytest.mark.parametrize("kind, build", [
    ("polynomial", lambda: schedules.warmup_polynomial_decay_after_warmup(
        17.0, total_steps=60, warmup_steps=9, power=2.0, end_value=1e-4)),
    ("cosine", lambda: schedules.warmup_cosine_decay(
        1e-3, total_steps=60, warmup_steps=9, end_value=1e-5)),
    ("piecewise", lambda: schedules.warmup_piecewise_constant(
        3.2, total_steps=60, warmup_steps=9, boundaries=(20, 40, 53), factor=0.1)),
])
def test_vision_schedules_match_formula_under_jit(kind, build):
  s = build()
  peak = float(s(9))
  ts = np.arange(0, 70)
  actual = np.asarray(jax.jit(jax.vmap(s))(ts))
  kwargs = {"polynomial": dict(power=2.0, end=1e-4), "cosine": dict(end=1e-5),
            "piecewise": dict(boundaries=(20, 40, 53))}[kind]
  expected = [reference_after_warmup(t, peak, 60, 9, kind, **kwargs) for t in ts]
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-9)
  assert actual[0] == 0.0 and peak == pytest.approx({"polynomial": 17.0, "cosine": 1e-3,
                                                     "piecewise": 3.2}[kind])


def test_vision_schedules_without_warmup_start_at_the_peak():
  assert float(schedules.warmup_polynomial_decay_after_warmup(2.0, 10, 0)(0)) == 2.0
  assert float(schedules.warmup_cosine_decay(2.0, 10, 0)(0)) == 2.0
  assert float(schedules.warmup_piecewise_constant(2.0, 10, 0, (5,))(5)) == pytest.approx(0.2)


@pytest.mark.parametrize("build, match", [
    (lambda: schedules.paper_learning_rate(0), "outside"),
    (lambda: schedules.paper_learning_rate(131072), "outside"),
    (lambda: schedules.paper_warmup_ratio(512.5), "outside"),
    (lambda: schedules.warmup_polynomial_decay_over_run(1e-3, 100, 101), "longer than the run"),
    (lambda: schedules.warmup_polynomial_decay_over_run(1e-3, 100, 10, power=0.0), "power"),
    (lambda: schedules.warmup_polynomial_decay_over_run(1e-3, 100, 10, power=-1.0), "power"),
    (lambda: schedules.bert_two_phase_schedule(1e-3, 100, 10, 1e-3, 50, 5, phase2_start=120),
     "out of order"),
    (lambda: schedules.bert_two_phase_schedule(1e-3, 100, 10, 1e-3, 50, 5, phase2_start=0),
     "out of order"),
    (lambda: schedules.bert_two_phase_schedule(1e-3, 100, 10, 1e-3, 50, 60), "longer"),
    (lambda: schedules.warmup_polynomial_decay_after_warmup(1.0, 100, 100),
     "no steps to decay"),
    (lambda: schedules.warmup_polynomial_decay_after_warmup(1.0, 100, 10, power=0.0), "power"),
    (lambda: schedules.warmup_cosine_decay(1.0, 100, 100), "no steps to decay"),
    (lambda: schedules.warmup_cosine_decay(-1.0, 100, 10), "finite and >= 0"),
    (lambda: schedules.warmup_piecewise_constant(1.0, 100, 10, (5,)), "after the warmup"),
    (lambda: schedules.warmup_piecewise_constant(1.0, 100, 10, (60, 30)), "increasing"),
    (lambda: schedules.warmup_piecewise_constant(1.0, 100, 10, (100,)), "before the end"),
    (lambda: schedules.warmup_piecewise_constant(1.0, 100, 10, (50,), factor=0.0), "factor"),
])
def test_bad_input(build, match):
  with pytest.raises(ValueError, match=match):
    build()
