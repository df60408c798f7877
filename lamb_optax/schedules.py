"""Large-batch learning-rate schedules: warmup + polynomial decay, two phases, the paper's table,
and the vision recipes' warmup + (polynomial after the warmup | cosine | step) schedules.

Every schedule here is an ``optax.Schedule`` (``step -> lr``), pure ``jnp``, safe under ``jit``.
Bad arguments raise ``ValueError`` at construction, never inside a trace.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import optax

# The paper's BERT-Large runs, reaching 32k: lr = 5e-3·sqrt(B/32768), warmup = B/32768 / 5.
_REFERENCE_BATCH = 32768
_REFERENCE_LR = 5e-3
_REFERENCE_WARMUP_RATIO = 1 / 5
# The square-root rule is stated only up to the paper's largest batch (the 64k first stage).
MAX_BATCH_SIZE = 65536


def _check_positive_int(value, argname: str) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(f"`{argname}` must be a positive integer, got {value!r}.")


def _check_warmup(warmup_steps, total_steps, what: str = "") -> None:
  _check_positive_int(total_steps, f"{what}total_steps")
  if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
    raise ValueError(f"`{what}warmup_steps` must be an integer >= 0, got {warmup_steps!r}.")
  if warmup_steps > total_steps:
    raise ValueError(
        f"{what}warmup_steps={warmup_steps} is longer than the run ({what}total_steps="
        f"{total_steps}); shorten the warmup or lengthen the run.")


def warmup_polynomial_decay_over_run(
    peak_value: float,
    total_steps: int,
    warmup_steps: int,
    power: float = 1.0,
    end_value: float = 0.0,
) -> optax.Schedule:
  """Linear warmup from 0 to ``peak_value``, then polynomial decay measured over the whole run.

  As in Google's and NVIDIA's BERT code, the decay fraction counts from step 0, not from the end
  of the warmup (compare :func:`warmup_polynomial_decay_after_warmup`)::

    lr(t) = peak · t / warmup                                     t <  warmup
    lr(t) = end + (peak − end) · (1 − t / total) ** power          warmup ≤ t ≤ total
    lr(t) = end                                                   t >  total

  ``power=1`` is the paper's linear decay, ``power=0.5`` NVIDIA's recipe. Like that code, the
  rate steps from ``peak·(warmup−1)/warmup`` to ``peak·(1 − warmup/total)**power`` at the end of
  the warmup, rather than decaying from the peak over the remaining steps.

  >>> s = warmup_polynomial_decay_over_run(1.0, total_steps=100, warmup_steps=10)
  >>> [round(float(s(t)), 3) for t in (0, 5, 10, 55, 100, 200)]
  [0.0, 0.5, 0.9, 0.45, 0.0, 0.0]
  """
  _check_warmup(warmup_steps, total_steps)
  if not power > 0:
    raise ValueError(f"`power` (the decay power) must be > 0, got {power!r}; use 1.0 for the "
                     "paper's linear decay or 0.5 for NVIDIA's.")
  if peak_value < 0 or end_value < 0:
    raise ValueError(f"Learning rates must be >= 0, got peak {peak_value}, end {end_value}.")

  def schedule(count):
    t = jnp.asarray(count, jnp.result_type(float))
    warm = peak_value * t / max(warmup_steps, 1)
    frac = jnp.clip((total_steps - t) / total_steps, 0.0, 1.0)  # exact 0 at t = total
    decay = end_value + (peak_value - end_value) * frac ** power
    return jnp.where(t < warmup_steps, warm, decay)

  return schedule


def two_phase_schedule(
    phase1: optax.Schedule,
    phase2: optax.Schedule,
    phase2_start: int,
) -> optax.Schedule:
  """Phase 1 until ``phase2_start``, then phase 2 from its own step 0 (so it re-warms).

  >>> p1 = warmup_polynomial_decay_over_run(6e-3, 7038, warmup_steps=2000, power=0.5)
  >>> p2 = warmup_polynomial_decay_over_run(4e-3, 1563, warmup_steps=200, power=0.5)
  >>> s = two_phase_schedule(p1, p2, phase2_start=7038)
  >>> float(s(7038)), round(float(s(7138)), 6)
  (0.0, 0.002)
  """
  _check_positive_int(phase2_start, "phase2_start")
  return optax.join_schedules([phase1, phase2], [phase2_start])


def bert_two_phase_schedule(
    phase1_peak: float, phase1_steps: int, phase1_warmup: int,
    phase2_peak: float, phase2_steps: int, phase2_warmup: int,
    power: float = 1.0,
    phase2_start: int | None = None,
) -> optax.Schedule:
  """Two warmup-polynomial-decay phases; phase 2 starts at ``phase2_start`` (default: the end
  of phase 1) and must start after step 0 and no later than phase 1's end.

  >>> s = bert_two_phase_schedule(6e-3, 7038, 2001, 4e-3, 1563, 200, power=0.5)
  >>> round(float(s(2000)), 6), float(s(7038)), round(float(s(7138)), 6)
  (0.005997, 0.0, 0.002)
  """
  p1 = warmup_polynomial_decay_over_run(phase1_peak, phase1_steps, phase1_warmup, power)
  p2 = warmup_polynomial_decay_over_run(phase2_peak, phase2_steps, phase2_warmup, power)
  phase2_start = phase1_steps if phase2_start is None else phase2_start
  if not 0 < phase2_start <= phase1_steps:
    raise ValueError(
        f"Phase boundaries out of order: phase2_start={phase2_start} must lie in (0, "
        f"phase1_steps={phase1_steps}]; start phase 2 after phase 1 begins and by its end.")
  return two_phase_schedule(p1, p2, phase2_start)


def _check_batch_size(batch_size) -> None:
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not (
      1 <= batch_size <= MAX_BATCH_SIZE):
    raise ValueError(
        f"batch_size={batch_size!r} is outside the paper's square-root rule, which covers "
        f"integer batch sizes 1..{MAX_BATCH_SIZE} (the paper ran 512..64k); pass an integer "
        "in that range or set the learning rate and warmup yourself.")


def paper_learning_rate(batch_size: int) -> float:
  """LAMB's BERT-Large peak learning rate for ``batch_size`` (You et al. 2020, Table 4).

  ``lr = 5 / (2^x · 10^3)``, i.e. ``5e-3 · sqrt(batch_size / 32768)``, the square-root scaling
  rule, which also fills in batch sizes between and beyond the table (up to 64k):

  ======  =====  ==========  =============
  batch   x      lr          warmup ratio
  ======  =====  ==========  =============
  512     3.0    6.25e-4     1/320
  1k      2.5    8.839e-4    1/160
  2k      2.0    1.25e-3     1/80
  4k      1.5    1.768e-3    1/40
  8k      1.0    2.5e-3      1/20
  16k     0.5    3.536e-3    1/10
  32k     0.0    5e-3        1/5
  ======  =====  ==========  =============

  The table came from secondary sources and is not verified against arXiv:1904.00962 (see
  docs/lamb.md); check it against the paper before quoting it.

  >>> paper_learning_rate(512), paper_learning_rate(32768)
  (0.000625, 0.005)
  """
  return sqrt_scaled_learning_rate(_REFERENCE_LR, _REFERENCE_BATCH, batch_size)


def sqrt_scaled_learning_rate(base_lr: float, base_batch_size: int, batch_size: int) -> float:
  """The square-root scaling rule: ``base_lr · sqrt(batch_size / base_batch_size)``.

  :func:`paper_learning_rate` is this rule from the paper's (5e-3, 32768); studies use it from a
  base rate tuned at a small batch.

  >>> sqrt_scaled_learning_rate(1e-3, 64, 256)
  0.002
  """
  _check_batch_size(base_batch_size)
  _check_batch_size(batch_size)
  return base_lr * math.sqrt(batch_size / base_batch_size)


def paper_warmup_ratio(batch_size: int) -> float:
  """The paper's warmup as a fraction of the run: ``batch_size / 32768 / 5`` (table above).

  At a fixed number of epochs this is a constant ~3,125 warmup steps for every batch size.

  >>> paper_warmup_ratio(512) == 1 / 320, paper_warmup_ratio(32768)
  (True, 0.2)
  """
  _check_batch_size(batch_size)
  return _REFERENCE_WARMUP_RATIO * batch_size / _REFERENCE_BATCH


def paper_schedule(batch_size: int, total_steps: int, power: float = 1.0) -> optax.Schedule:
  """Warmup + polynomial decay with the paper's peak lr and warmup for ``batch_size``.

  >>> s = paper_schedule(32768, total_steps=15625)
  >>> round(float(s(3124)), 6), round(float(s(3125)), 6)  # the warmup is 1/5 of the run
  (0.004998, 0.004)
  """
  warmup = round(paper_warmup_ratio(batch_size) * total_steps)
  return warmup_polynomial_decay_over_run(
      paper_learning_rate(batch_size), total_steps, warmup, power)


# Vision recipes: the decay starts after the warmup (optax's convention), not at step 0 as in
# BERT's warmup_polynomial_decay_over_run above.


def _check_rates(peak_value, end_value) -> None:
  if not (math.isfinite(peak_value) and math.isfinite(end_value)) or peak_value < 0 or (
      end_value < 0):
    raise ValueError(f"Learning rates must be finite and >= 0, got peak {peak_value}, end "
                     f"{end_value}.")


def _warmup_then(peak_value: float, warmup_steps: int, after: optax.Schedule) -> optax.Schedule:
  """Linear warmup from 0 to ``peak_value`` over ``warmup_steps``, then ``after`` from its
  step 0 (no warmup: ``after`` alone)."""
  if not warmup_steps:
    return after
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak_value, warmup_steps), after], [warmup_steps])


def warmup_polynomial_decay_after_warmup(
    peak_value: float,
    total_steps: int,
    warmup_steps: int,
    power: float = 2.0,
    end_value: float = 0.0,
) -> optax.Schedule:
  """Linear warmup, then polynomial decay from the peak over the steps *after* the warmup.

  Unlike :func:`warmup_polynomial_decay_over_run`, the decay starts at the peak::

    lr(t) = peak · t / warmup                                                  t < warmup
    lr(t) = end + (peak − end) · (1 − (t − warmup) / (total − warmup)) ** power   t ≥ warmup

  The MLPerf ResNet-50 LARS schedule (power 2, end 1e-4; ``lars_util.poly_rate_schedule`` in
  mlcommons/training_results_v0.7, which divides by ``total − warmup + 1``: one step apart).

  >>> s = warmup_polynomial_decay_after_warmup(10.0, total_steps=110, warmup_steps=10)
  >>> [round(float(s(t)), 3) for t in (0, 5, 10, 60, 110)]
  [0.0, 5.0, 10.0, 2.5, 0.0]
  """
  _check_warmup(warmup_steps, total_steps)
  if warmup_steps == total_steps:
    raise ValueError(f"warmup_steps={warmup_steps} leaves no steps to decay over (total_steps="
                     f"{total_steps}); shorten the warmup.")
  if not power > 0:
    raise ValueError(f"`power` (the decay power) must be > 0, got {power!r}.")
  _check_rates(peak_value, end_value)
  decay = optax.polynomial_schedule(peak_value, end_value, power, total_steps - warmup_steps)
  return _warmup_then(peak_value, warmup_steps, decay)


def warmup_cosine_decay(peak_value: float, total_steps: int, warmup_steps: int,
                        end_value: float = 0.0) -> optax.Schedule:
  """Linear warmup, then half a cosine from the peak to ``end_value`` at ``total_steps``:
  ``optax.warmup_cosine_decay_schedule`` (big_vision's ``decay_type='cosine'``).

  >>> s = warmup_cosine_decay(1.0, total_steps=110, warmup_steps=10)
  >>> [round(float(s(t)), 3) for t in (5, 10, 60, 110)]
  [0.5, 1.0, 0.5, 0.0]
  """
  _check_warmup(warmup_steps, total_steps)
  if warmup_steps == total_steps:
    raise ValueError(f"warmup_steps={warmup_steps} leaves no steps to decay over (total_steps="
                     f"{total_steps}); shorten the warmup.")
  _check_rates(peak_value, end_value)
  return optax.warmup_cosine_decay_schedule(0.0, peak_value, warmup_steps, total_steps, end_value)


def warmup_piecewise_constant(peak_value: float, total_steps: int, warmup_steps: int,
                              boundaries, factor: float = 0.1) -> optax.Schedule:
  """Linear warmup, then ``peak_value`` multiplied by ``factor`` at each step of ``boundaries``
  (absolute steps, increasing, after the warmup and within the run): Goyal et al.'s step
  schedule (×0.1 at epochs 30, 60 and 80) via ``optax.piecewise_constant_schedule``.

  >>> s = warmup_piecewise_constant(1.0, 100, 10, boundaries=(30, 60), factor=0.1)
  >>> [round(float(s(t)), 4) for t in (5, 10, 29, 30, 60, 100)]
  [0.5, 1.0, 1.0, 0.1, 0.01, 0.01]
  """
  _check_warmup(warmup_steps, total_steps)
  _check_rates(peak_value, 0.0)
  boundaries = tuple(boundaries)
  if any(isinstance(b, bool) or not isinstance(b, int) for b in boundaries) or not all(
      warmup_steps < b < total_steps for b in boundaries) or list(boundaries) != sorted(
          set(boundaries)):
    raise ValueError(f"boundaries {boundaries} must be increasing integer steps after the warmup "
                     f"({warmup_steps}) and before the end of the run ({total_steps}).")
  if not 0 < factor <= 1:
    raise ValueError(f"`factor` must lie in (0, 1], got {factor!r}.")
  steps = optax.piecewise_constant_schedule(
      peak_value, {b - warmup_steps: factor for b in boundaries})
  return _warmup_then(peak_value, warmup_steps, steps)
