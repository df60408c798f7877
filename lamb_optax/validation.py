"""Argument checks shared by every transform and alias, run at construction time.

Each check raises a ``TypeError``/``ValueError`` that names the argument and says what it must be,
so a bad recipe fails where it is written, never inside a jitted trace.

Strings are refused wherever a number, a mask or ``stacked_axes`` is expected: ``float("1e-3")``
and ``bool("kernel")`` would otherwise accept them with a meaning nobody intended.

Only concrete Python/NumPy values are checked. JAX arrays (and tracers) pass unchecked: that is
how ``optax.inject_hyperparams`` hands hyperparameters to the alias, inside ``jit``, at every
update, and a check there could neither call ``float`` nor raise usefully.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

Bounds = tuple[float, float] | None


def is_traced(value: Any) -> bool:
  """True for JAX arrays and tracers (injected hyperparameters), which are not checked.

  >>> is_traced(0.1), is_traced(jnp.asarray(0.1))
  (False, True)
  """
  return isinstance(value, (jax.Array, jax.core.Tracer))


def check_bounds(bounds: Bounds, argname: str) -> None:
  """Raises a ValueError naming ``argname`` unless ``bounds`` is None or 0 <= lo <= hi."""
  if bounds is None or (isinstance(bounds, (tuple, list)) and any(map(is_traced, bounds))):
    return
  if isinstance(bounds, (str, bytes)) or (
      isinstance(bounds, (tuple, list)) and any(isinstance(b, (str, bytes)) for b in bounds)):
    raise TypeError(f"`{argname}` must be a pair (lo, hi) of numbers or None, got {bounds!r}.")
  try:
    lo, hi = (float(b) for b in bounds)
  except (TypeError, ValueError):
    raise TypeError(
        f"`{argname}` must be a pair (lo, hi) of numbers or None, got {bounds!r}.") from None
  if math.isnan(lo) or math.isnan(hi) or lo < 0 or lo > hi:
    raise ValueError(
        f"`{argname}` must satisfy 0 <= lo <= hi (use math.inf for no upper bound), "
        f"got {bounds!r}."
    )


def check_nonnegative(value: Any, argname: str) -> None:
  """Raises a ValueError naming ``argname`` unless ``value`` is a finite number >= 0."""
  if callable(value) or is_traced(value):
    return
  if isinstance(value, (str, bytes)):
    raise TypeError(f"`{argname}` must be a number, got the string {value!r}.")
  try:
    value = float(value)
  except (TypeError, ValueError):
    raise TypeError(f"`{argname}` must be a number, got {value!r}.") from None
  if not math.isfinite(value) or value < 0:
    raise ValueError(f"`{argname}` must be finite and >= 0, got {value!r}.")


def check_decay_rate(value: Any, argname: str) -> None:
  """Raises a ValueError naming ``argname`` unless ``value`` lies in [0, 1)."""
  check_nonnegative(value, argname)
  if callable(value) or is_traced(value):
    return
  if float(value) >= 1:
    raise ValueError(f"`{argname}` must lie in [0, 1), got {value!r}.")


def check_learning_rate(learning_rate: Any) -> None:
  """A schedule passes; a number must be finite and >= 0."""
  if not callable(learning_rate):
    check_nonnegative(learning_rate, "learning_rate")


def check_structure_spec(spec: Any, argname: str) -> None:
  """Raises a TypeError naming ``argname`` if a mask or ``stacked_axes`` spec holds a string.

  Callables pass (they are resolved against the params at ``init``), as do pytrees of bools or
  ints, whose structure is checked there too.

  >>> check_structure_spec("kernel", "weight_decay_mask")  # doctest: +ELLIPSIS
  Traceback (most recent call last):
  TypeError: `weight_decay_mask` must be a pytree of bools or a callable ..., got 'kernel'. ...
  """
  if callable(spec):
    return
  for leaf in jax.tree.leaves(spec):
    if isinstance(leaf, (str, bytes)):
      if argname == "stacked_axes":
        what, hint = "ints", "pass a callable, e.g. `lambda p: {k: int(k == 'layers') for k in p}`"
      else:
        what, hint = "bools", "use `lamb_optax.path_mask(include=...)`"
      raise TypeError(
          f"`{argname}` must be a pytree of {what} or a callable `params -> pytree`, got "
          f"{leaf!r}. To select leaves by name, {hint}."
      )


def check_dtype(dtype: Any, argname: str) -> None:
  """None passes; anything else must name a floating dtype."""
  if dtype is None:
    return
  try:
    dtype = jnp.dtype(dtype)
  except TypeError:
    raise TypeError(f"`{argname}` must be a dtype such as jnp.bfloat16, got {dtype!r}.") from None
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"`{argname}` must be a floating dtype, got {dtype}.")


def check_adam(learning_rate: Any, b1: Any, b2: Any, eps: Any, eps_root: Any,
               weight_decay: Any, mu_dtype: Any = None) -> None:
  """The checks every Adam-moment alias (LAMB, N-LAMB, AdamW) runs on its shared arguments."""
  check_learning_rate(learning_rate)
  check_decay_rate(b1, "b1")
  check_decay_rate(b2, "b2")
  check_nonnegative(eps, "eps")
  check_nonnegative(eps_root, "eps_root")
  check_nonnegative(weight_decay, "weight_decay")
  check_dtype(mu_dtype, "mu_dtype")
