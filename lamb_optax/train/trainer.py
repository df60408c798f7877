"""What a run is made of, built once from the config: mesh, batch plan, task, optimizer, shardings,
and the jitted train and eval steps.

The loop (``loop.py``), the benchmarks and compiling for another machine all use the same
:class:`Trainer`, so they run the very step the trainer runs. Every check that can fail on the
user's input (config keys, schedule, batch/mesh arithmetic, data shape) runs in :func:`build`,
before anything is compiled.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from lamb_optax import recipes
from lamb_optax import sharding
from lamb_optax import tasks
from lamb_optax.train import checkpoint as checkpoint_lib
from lamb_optax.train import plan as plan_lib
from lamb_optax.train import sources
from lamb_optax.train import step as step_lib
from lamb_optax.train import workdir as workdir_lib

PyTree = Any


@dataclasses.dataclass
class Trainer:
  """The parts of a run that do not change while it runs."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  plan: plan_lib.BatchPlan
  task: Any  # a lamb_optax.tasks.base.Task
  tx: optax.GradientTransformation
  learning_rate: optax.Schedule
  state_shardings: step_lib.TrainState
  batch_sharding: jax.sharding.NamedSharding

  def abstract_state(self) -> step_lib.TrainState:
    """``ShapeDtypeStruct``s of the train state, laid out by :attr:`state_shardings`."""
    with jax.set_mesh(self.mesh):
      abstract = jax.eval_shape(lambda p: step_lib.create_train_state(p, self.tx, self.config.seed),
                                self.task.abstract_params())
    return sharding.with_shardings(abstract, self.state_shardings)

  def initial_params(self) -> PyTree:
    """The params a new run starts from: the task's fresh initialisation, or ``init_from``'s.

    ``init_from`` names another run (phase 1 of two-phase pretraining, a pretrained model to
    fine-tune). A task whose params differ from the source's (a fine-tuning head, a Hugging Face
    checkpoint) defines ``params_from(source, restore_params) -> params`` (``restore_params``:
    :func:`lamb_optax.train.checkpoint.restore_params`, the checksummed reader of other runs);
    otherwise the same tree is restored from the source's newest intact checkpoint.
    """
    source = self.config.init_from
    if not source:
      return self.task.init_params()
    params_from = getattr(self.task, "params_from", None)
    if params_from is not None:
      return params_from(source, checkpoint_lib.restore_params)
    return checkpoint_lib.restore_params(source, self.abstract_state().params)

  def fresh_state(self, params: PyTree | None = None) -> step_lib.TrainState:
    """A new train state from ``params`` (default: :meth:`initial_params`).

    With ``init_from_optimizer_state`` the optimizer state comes from ``init_from`` too (see
    :meth:`state_from_source`).
    """
    if params is None and self.config.init_from and self.config.init_from_optimizer_state:
      return self.state_from_source()
    params = self.initial_params() if params is None else params
    with jax.set_mesh(self.mesh):
      return jax.jit(lambda p: step_lib.create_train_state(p, self.tx, self.config.seed),
                     out_shardings=self.state_shardings)(params)

  def state_from_source(self) -> step_lib.TrainState:
    """Params *and* optimizer state of ``init_from``, its step counters restarted at 0.

    NVIDIA's two-phase BERT recipe (DeepLearningExamples ``run_pretraining.py --phase2``) loads
    phase 1's optimizer state, Adam moments included, and sets each state's ``step`` to the new
    run's global step (0); Google's (``init_checkpoint``) restores only the model's trainable
    variables, which is ``init_from_optimizer_state=False``. Needs the same optimizer.
    """
    if getattr(self.task, "params_from", None) is not None:
      raise ValueError("init_from_optimizer_state needs the source run's own params and optimizer "
                       "(two-phase pretraining); this task converts its params (fine-tuning). "
                       "Set init_from_optimizer_state=False.")
    abstract = self.abstract_state()
    parts = checkpoint_lib.restore_state_parts(
        self.config.init_from, {"params": abstract.params, "opt_state": abstract.opt_state})
    restart = lambda x: jnp.zeros_like(x) if jnp.issubdtype(x.dtype, jnp.integer) else x
    state = self.fresh_state(parts["params"])
    return state._replace(opt_state=jax.tree.map(restart, parts["opt_state"]))

  def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
    """The global train batch as ``ShapeDtypeStruct``s (for compiling without data)."""
    g = self.plan.global_batch_size
    return {k: jax.ShapeDtypeStruct((g, *s.shape), s.dtype, sharding=self.batch_sharding)
            for k, s in self.task.batch_spec().items()}

  def train_step(self) -> Callable:
    """The jitted ``(state, global_batch) -> (state, metrics)``; the state is donated."""
    # By logical name, not self.batch_sharding: the step may run it in a shard of the data axis.
    constraint = lambda b: jax.tree.map(
        lambda x: sharding.constrain(x, ("batch",) + (None,) * (x.ndim - 1)), b)
    return jax.jit(
        step_lib.make_train_step(self.task.objective, self.task.normalizers, self.tx,
                                 self.plan.num_micro_batches, micro_batch_constraint=constraint,
                                 # Tasks with non-trainable state (BatchNorm) define it.
                                 update_model_state=getattr(self.task, "update_model_state", None),
                                 data_axis="data"),
        in_shardings=(self.state_shardings, self.batch_sharding),
        out_shardings=(self.state_shardings, None), donate_argnums=(0,))

  def eval_step(self) -> Callable:
    """The jitted ``(params, global_batch) -> metric sums``."""
    return jax.jit(self.task.eval_sums,
                   in_shardings=(self.state_shardings.params, self.batch_sharding))

  def describe(self) -> str:
    p, mesh = self.plan, self.mesh
    return (f"Training {self.task.describe()} with {self.config.optimizer.name} on "
            f"{mesh.devices.size} device(s) in {jax.process_count()} process(es), mesh "
            f"{dict(mesh.shape)}: global batch {p.global_batch_size} = {p.data_parallel_devices} "
            f"x {p.micro_batch_size} x {p.num_micro_batches} micro-batch(es)")


def build(config: ml_collections.ConfigDict, workdir: str | None, *,
          devices: Sequence[Any] | None = None,
          process_count: int | None = None,
          plan: plan_lib.BatchPlan | None = None) -> Trainer:
  """Checks ``config`` (:func:`lamb_optax.train.plan.check`) and builds the run's parts.

  Args:
    config: a trainer config (``lamb_optax.train.config.default_config`` and changes); locked.
    workdir: where the task finds (or builds) its data; None builds the task without data,
      for compiling only.
    devices: the mesh's devices (default: all of ``jax.devices()``); e.g. a TPU topology's.
    process_count: processes sharing the batch (default: ``jax.process_count()``).
    plan: the result of :func:`lamb_optax.train.plan.check` for these devices, when the caller
      has already run it (``--compile_for`` does, to refuse a config before loading libtpu).
  """
  devices = list(jax.devices() if devices is None else devices)
  process_count = jax.process_count() if process_count is None else process_count
  if plan is None:
    plan = plan_lib.check(config, len(devices), process_count)
  if workdir is not None:
    workdir_lib.check_writable(workdir)
  mesh = sharding.make_mesh(dict(config.mesh), devices=devices)
  # A resumed fine-tuning run builds its encoder from its own copies (lamb_optax/train/sources.py).
  task = tasks.build(sources.for_build(config, workdir), mesh, workdir)
  _check_divisible(task.abstract_params(), task.param_shardings, mesh)
  tx, learning_rate = recipes.build_optimizer(config, task.stacked_axes)
  with jax.set_mesh(mesh):
    _check_optimizer(tx, task.abstract_params(), config)
    state_shardings = step_lib.state_shardings(tx, task.abstract_params(), task.param_shardings,
                                               mesh)
  return Trainer(config, mesh, plan, task, tx, learning_rate, state_shardings,
                 sharding.batch_sharding(mesh, rank=1))


def _check_divisible(abstract_params: PyTree, param_shardings: PyTree,
                     mesh: jax.sharding.Mesh) -> None:
  """Every sharded dimension of every param must divide evenly over its mesh axes (e.g. the
  attention heads over ``mesh.tensor``): refused here, in one line, not deep in the compiler."""
  flat = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
  for (path, param), spec in zip(flat, jax.tree.leaves(
      param_shardings, is_leaf=lambda x: isinstance(x, jax.sharding.NamedSharding)), strict=True):
    for dim, axes in enumerate(spec.spec):
      axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
      size = math.prod(mesh.shape[a] for a in axes)
      if param.shape[dim] % size:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        raise ValueError(
            f"Param {name} {tuple(param.shape)}: dimension {dim} ({param.shape[dim]}) does not "
            f"divide over mesh axes {axes} of size {size}. Set config.mesh so that "
            f"{'x'.join(axes)} divides {param.shape[dim]} (e.g. --config.mesh.tensor to a divisor "
            "of the attention heads).")


def _check_optimizer(tx: optax.GradientTransformation, abstract_params: PyTree,
                     config: ml_collections.ConfigDict) -> None:
  """Traces the optimizer's init and update on the params' shapes: arguments that construct
  fine but fail on the params (a mask of the wrong structure) are named here, before compiling."""
  try:
    state = jax.eval_shape(tx.init, abstract_params)
    jax.eval_shape(tx.update, abstract_params, state, abstract_params)
  except (TypeError, ValueError, AttributeError, KeyError) as e:
    raise ValueError(f"optimizer {config.optimizer.name} with optimizer.kwargs "
                     f"{config.optimizer.kwargs.to_dict()} fails on the model's params: "
                     f"{type(e).__name__}: {e}") from e
