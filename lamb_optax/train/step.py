"""The train step: one ``jax.jit`` over the mesh, gradient accumulation by ``lax.scan``.

A global batch of any size runs on any number of devices: the step splits it into
``num_micro_batches`` micro-batches (each spread over all data-parallel devices), scans over them
accumulating float32 gradients, and applies the optimizer once. Memory is set by the micro-batch;
the only full-size extra buffer is the float32 gradient accumulator (no ``optax.MultiSteps``
copy of the optimizer state, no host-side loop); with one micro-batch there is neither. With
float32 parameters each micro-batch's backward pass adds its gradients into that accumulator
itself (:func:`_accumulate_into_refs`), rather than returning them to be added.

Exactness across layouts: the objective is a *sum* of per-example terms divided by global
normalisers computed from the whole batch before the scan (e.g. the total masked-LM weight).
So 1 device × 4 micro-batches, 4 devices × 1 and 2 hosts × 2 devices compute the same loss and
gradient up to float summation order.

Where the gradients are added up across devices: with several micro-batches and a ``data_axis``,
each data-parallel shard accumulates its own float32 gradient sum in a ``jax.shard_map`` (the
``fsdp`` and ``tensor`` axes stay automatic inside) and the shards' sums are added by one
``psum`` after the loop. Left to itself, XLA all-reduces every micro-batch's gradient inside the
loop, in the compute dtype (bfloat16 for BERT-Large: 4 × 0.62 GiB per chip per step in phase 1,
where one float32 sum after the loop moves 1.17 GiB).

Non-trainable state (optional, e.g. BatchNorm running statistics): a task may keep it in its
params dict under the key :data:`MODEL_STATE`. The optimizer then sees only the rest
(:func:`split_params`); the objective gets the whole dict and returns, among its sums, a tree
under ``MODEL_STATE`` (e.g. a micro-batch's batch moments) that adds up over micro-batches; once
per step ``update_model_state(model_state, summed, num_micro_batches)`` gives the new state.
Tasks without that key (BERT) run exactly the code they ran before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from lamb_optax import sharding
from lamb_optax.tasks.base import MODEL_STATE

PyTree = Any
Batch = Mapping[str, jax.Array]
# objective(params, micro_batch, rng, normalizers) -> (loss contribution, {metric: sum})
Objective = Callable[[PyTree, Batch, jax.Array, Mapping[str, jax.Array]],
                     tuple[jax.Array, dict[str, jax.Array]]]




def split_params(params: PyTree) -> tuple[PyTree, Any]:
  """``(trainable, model_state)``: ``params`` itself and None unless it holds :data:`MODEL_STATE`.

  >>> split_params({"params": 1, "model_state": 2})
  ({'params': 1}, 2)
  >>> split_params({"bert": 1})
  ({'bert': 1}, None)
  """
  if isinstance(params, Mapping) and MODEL_STATE in params:
    return {k: v for k, v in params.items() if k != MODEL_STATE}, params[MODEL_STATE]
  return params, None


def merge_params(trainable: PyTree, model_state: Any) -> PyTree:
  """The inverse of :func:`split_params`."""
  return trainable if model_state is None else {**trainable, MODEL_STATE: model_state}


class TrainState(NamedTuple):
  """Everything a step changes; checkpointed as one pytree."""

  step: jax.Array  # int32 scalar: optimizer updates applied (skipped non-finite ones included)
  params: PyTree
  opt_state: PyTree
  rng: jax.Array  # uint32 key data; dropout keys are folded from it and the step
  nonfinite_in_a_row: jax.Array  # int32: consecutive skipped updates


def state_shardings(tx: optax.GradientTransformation, abstract_params: PyTree,
                    param_shardings: PyTree, mesh: jax.sharding.Mesh) -> TrainState:
  """Shardings of the whole train state: optimizer moments are sharded like their params,
  everything else (step, counts, trust ratios, RNG) is replicated."""
  replicated = sharding.replicated(mesh)
  trainable, _ = split_params(abstract_params)
  abstract_opt = jax.eval_shape(tx.init, trainable)
  return TrainState(
      step=replicated, params=param_shardings,
      opt_state=sharding.like_params(abstract_opt, trainable, split_params(param_shardings)[0],
                                     replicated),
      rng=replicated, nonfinite_in_a_row=replicated)


def create_train_state(params: PyTree, tx: optax.GradientTransformation, seed: int) -> TrainState:
  return TrainState(
      step=jnp.zeros([], jnp.int32),
      params=params,
      opt_state=tx.init(split_params(params)[0]),
      rng=jax.random.key_data(jax.random.key(seed)),
      nonfinite_in_a_row=jnp.zeros([], jnp.int32),
  )


def split_micro_batches(batch: Batch, num_micro_batches: int) -> Batch:
  """[G, ...] -> [M, G/M, ...] so that every micro-batch takes rows from every device.

  Row ``k·M + i`` goes to micro-batch ``i``. With the batch sharded over devices along axis 0,
  each device's rows stay on that device (no communication), and every micro-batch is spread
  over all data-parallel devices.
  """

  def split(x):
    x = x.reshape(x.shape[0] // num_micro_batches, num_micro_batches, *x.shape[1:])
    return jnp.swapaxes(x, 0, 1)

  return jax.tree.map(split, batch)


def _reduces_after_accumulation(data_axis: str | None, num_micro_batches: int,
                                model_state: Any) -> bool:
  if data_axis is None or num_micro_batches == 1 or model_state is not None:
    return False
  mesh = jax.sharding.get_abstract_mesh()
  return not mesh.empty and mesh.shape.get(data_axis, 1) > 1


def _sum_over_shards(accumulate: Callable, axis: str) -> Callable:
  """``accumulate(params, batch, *replicated)`` run on each shard of the batch along mesh
  ``axis``, its sums added up over the shards once (``psum``). The other mesh axes stay
  automatic (GSPMD) inside. Every input is an argument, none a closure: a closed-over array
  would keep the outer mesh's sharding inside the shard_map, which JAX rejects."""

  def per_shard(*args):
    return jax.tree.map(lambda x: jax.lax.psum(x, axis), accumulate(*args))

  # check_vma=False: every output is a per-shard sum by the objective's contract, and JAX's
  # varying-axes check rejects its own Threefry loop on CPU (invariant key, varying counters).
  return jax.shard_map(per_shard, in_specs=(P(), P(axis), P(), P()), out_specs=P(),
                       axis_names={axis}, check_vma=False)


def _accumulates_in_place(trainable: PyTree) -> bool:
  """Whether :func:`_accumulate_into_refs` applies: float32 parameters (their cotangents are
  float32, the accumulator's dtype) and a JAX whose ``vjp`` accumulates into refs."""
  leaves = jax.tree.leaves(trainable)
  # jax.ad.GradRef is what such a vjp returns for the gradients it put into refs.
  return (hasattr(jax, "new_ref") and hasattr(getattr(jax, "ad", None), "GradRef")
          and all(jnp.dtype(x.dtype) == jnp.float32 for x in leaves))


def _accumulate_into_refs(fun: Callable, trainable: PyTree, micro_batches: Batch,
                          step_key: jax.Array, normalizers: Mapping[str, jax.Array],
                          micro_batch_constraint: Callable[[Batch], Batch]):
  """``(grads, loss, sums)`` summed over ``micro_batches`` (leading axis), every micro-batch's
  backward pass adding its gradients into one float32 accumulator (``vjp(...).with_refs``).

  Summing returned gradients instead costs, per micro-batch, a zero-filled float32 copy of
  every stacked weight for the backward layer loop to add its layers' gradients into, and a
  pass reading that copy and the running sum and writing the sum: for BERT-Large ~5 GB of HBM
  traffic per chip and micro-batch. Here the backward loop adds each layer's gradient into the
  accumulator's slice in place, and the accumulator is zero-filled once per step.
  """
  grads = jax.tree.map(lambda p: jax.new_ref(jnp.zeros(p.shape, jnp.float32)), trainable)

  def micro_step(carry, inputs):
    index, micro_batch = inputs
    loss, backward, sums = jax.vjp(
        lambda t: fun(t, micro_batch_constraint(micro_batch),
                      jax.random.fold_in(step_key, index), normalizers),
        trainable, has_aux=True)
    backward.with_refs(grads)(jnp.ones_like(loss))
    return jax.tree.map(jnp.add, carry, (loss, sums)), None

  num_micro_batches = jax.tree.leaves(micro_batches)[0].shape[0]
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(
      lambda b: fun(trainable, b, step_key, normalizers),
      jax.tree.map(lambda x: x[0], micro_batches)))
  loss, sums = jax.lax.scan(micro_step, zeros,
                            (jnp.arange(num_micro_batches), micro_batches))[0]
  return jax.tree.map(jax.freeze, grads), loss, sums


def make_train_step(
    objective: Objective,
    normalizers_fn: Callable[[Batch], Mapping[str, jax.Array]],
    tx: optax.GradientTransformation,
    num_micro_batches: int,
    *,
    micro_batch_constraint: Callable[[Batch], Batch] = lambda b: b,
    update_model_state: Callable[[PyTree, PyTree, int], PyTree] | None = None,
    data_axis: str | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """Returns ``train_step(state, global_batch) -> (state, metrics)`` (not yet jitted).

  A non-finite loss, gradient or new params (the update's result) skip the update (params and
  optimizer state unchanged) and increment ``state.nonfinite_in_a_row``, which the loop turns
  into a clear error after N; non-finite params are never kept, so never checkpointed.

  Args:
    objective: per micro-batch loss contribution and metric sums (see module docstring).
    normalizers_fn: global normalisers from the whole batch (e.g. total masked-LM weight).
    tx: the optimizer.
    num_micro_batches: gradient-accumulation steps per update.
    micro_batch_constraint: applied to each micro-batch inside the scan, typically
      :func:`lamb_optax.sharding.constrain` by the logical name ``batch``, which keeps it
      sharded over the data axes (and leaves out ``data_axis`` inside its shards).
    update_model_state: for params holding :data:`MODEL_STATE`: ``(state, summed sums[MODEL_STATE],
      num_micro_batches) -> new state``, once per step (see the module docstring).
    data_axis: the mesh axis (of the mesh set by ``jax.set_mesh``) that splits the batch and
      replicates the params, if any. With several micro-batches, each of its shards then sums
      its own gradients over the micro-batches and the shards' sums are added once, after the
      loop: one float32 all-reduce per step where XLA would reduce each micro-batch's gradient
      (in the compute dtype) inside the loop. Not for params holding :data:`MODEL_STATE`
      (BatchNorm's statistics mix a micro-batch's rows across shards): those keep the loop.
  """

  def train_step(state: TrainState, batch: Batch):
    normalizers = normalizers_fn(batch)
    step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    trainable, model_state = split_params(state.params)
    if model_state is not None and update_model_state is None:
      raise ValueError(f"The params hold {MODEL_STATE!r} but no update_model_state was given.")
    objective_of_trainable = lambda t, *args: objective(merge_params(t, model_state), *args)
    grad_fn = jax.value_and_grad(objective_of_trainable, has_aux=True)

    def accumulate(trainable, batch, step_key, normalizers):
      """Sums of float32 gradients, loss and metric sums over the micro-batches of ``batch``."""

      def micro_step(index, micro_batch):
        micro_batch = micro_batch_constraint(micro_batch)
        (loss, sums), grads = grad_fn(trainable, micro_batch,
                                      jax.random.fold_in(step_key, index), normalizers)
        return jax.tree.map(lambda g: g.astype(jnp.float32), grads), loss, sums

      micro_batches = split_micro_batches(batch, num_micro_batches)
      if num_micro_batches == 1:  # no loop, no accumulator
        return micro_step(0, jax.tree.map(lambda x: x[0], micro_batches))
      if _accumulates_in_place(trainable):
        try:
          return _accumulate_into_refs(objective_of_trainable, trainable, micro_batches,
                                       step_key, normalizers, micro_batch_constraint)
        except TypeError:
          # Not every primitive's transpose accumulates into a ref yet (jax 0.10.2 fails on
          # ``x[-1]``, a static slice without strides): such a model gets the returned
          # gradients summed below, the same sums; a real error in the model recurs there.
          pass
      first = jax.tree.map(lambda x: x[0], micro_batches)
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                           jax.eval_shape(micro_step, 0, first))
      add = lambda carry, inputs: (jax.tree.map(jnp.add, carry, micro_step(*inputs)), None)
      return jax.lax.scan(add, zeros, (jnp.arange(num_micro_batches), micro_batches))[0]

    if _reduces_after_accumulation(data_axis, num_micro_batches, model_state):
      accumulate = _sum_over_shards(accumulate, data_axis)
    grads, loss, sums = accumulate(trainable, batch, step_key, normalizers)

    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, trainable)
    grad_norm = optax.tree.norm(grads)

    def update(_):
      updates, new_opt_state = tx.update(grads, state.opt_state, trainable)
      new_params = optax.apply_updates(trainable, updates)
      # Finite loss and gradients can still give non-finite params (a NaN or huge learning
      # rate); one reduction over the new params catches those too. Its float32 sum of squares
      # overflows once a param passes ~1e19, which counts as non-finite: such params are
      # garbage already.
      finite = jnp.isfinite(optax.tree.norm(new_params))
      return jax.lax.cond(finite, lambda _: (new_params, new_opt_state, finite), skip, None)

    def skip(_=None):
      return trainable, state.opt_state, jnp.asarray(False)

    # Conditionals, not a jnp.where over every parameter and moment: a skipped update returns
    # the old state, an applied one costs no extra pass.
    new_params, new_opt_state, finite = jax.lax.cond(
        jnp.isfinite(loss) & jnp.isfinite(grad_norm), update, skip, None)
    if model_state is not None:
      sums = dict(sums)
      new_model_state = update_model_state(model_state, sums.pop(MODEL_STATE), num_micro_batches)
      new_model_state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_model_state,
                                     model_state)
      new_params = merge_params(new_params, new_model_state)
    new_state = state._replace(
        step=state.step + 1,
        params=new_params,
        opt_state=new_opt_state,
        nonfinite_in_a_row=jnp.where(finite, 0, state.nonfinite_in_a_row + 1),
    )
    metrics = {"loss": loss, "grad_norm": grad_norm, "update_skipped": 1 - finite.astype(jnp.int32),
               "nonfinite_in_a_row": new_state.nonfinite_in_a_row,
               **sums}
    return new_state, metrics

  return train_step

