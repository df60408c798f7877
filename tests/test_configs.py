"""The recipe configs: schema-valid, published numbers, and a working optimizer + schedule."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lamb_optax
from lamb_optax import recipes
from lamb_optax.train import config as train_config
from lamb_optax.train import plan as plan_lib
from lamb_optax.train import presets

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def load(name, arg=None):
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module, (module.get_config() if arg is None else module.get_config(arg))


RECIPES = [("lamb_paper", str(b)) for b in (512, 1024, 2048, 4096, 8192, 16384, 32768)] + [
    ("bert_large_phase1", None), ("bert_large_phase2", None), ("bert_base_phase1", None),
    ("bert_base_phase2", None), ("nvlamb", "phase1"), ("nvlamb", "phase2"),
    ("adamw_baseline", None), ("tiny", None), ("tiny_32k", None), ("digits_resnet", None),
    ("digits_vit", None)]


@pytest.mark.parametrize("name, arg", RECIPES)
def test_recipe_builds_and_steps(name, arg):
  module, config = load(name, arg)
  assert all(s in module.__doc__ for s in ("Hardware", "Published result", "python -m"))
  train_config.lock(config)  # only keys the trainer reads
  train_config.check_schedule(config)
  tx, lr = recipes.build_optimizer(config, stacked_axes={"layers": 1, "head": 0})
  params = {"layers": {"kernel": jnp.ones((2, 3, 3))}, "head": {"kernel": jnp.ones((3, 2))}}
  updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
  assert all(np.isfinite(u).all() for u in jax.tree.leaves(updates))
  assert float(lr(0)) == 0.0 and float(lr(config.num_train_steps)) == 0.0
  w = config.warmup_steps
  assert float(lr(w - 1)) == pytest.approx(config.learning_rate * (w - 1) / w, rel=1e-5)


def test_paper_configs_follow_the_table():
  for batch, x in zip((512, 1024, 2048, 4096, 8192, 16384, 32768), np.arange(3.0, -0.5, -0.5),
                      strict=True):
    _, config = load("lamb_paper", str(batch))
    assert config.learning_rate == pytest.approx(5 / (2 ** x * 1e3))
    assert config.num_train_steps * batch == 1_000_000 * 512
    assert config.warmup_steps == 3125


def test_nvlamb_recipe_numbers():
  _, p1 = load("nvlamb", "phase1")
  _, p2 = load("nvlamb", "phase2")
  assert (p1.global_batch_size, p1.num_train_steps, p1.learning_rate) == (65536, 7038, 6e-3)
  assert (p2.global_batch_size, p2.num_train_steps, p2.learning_rate) == (32768, 1563, 4e-3)
  assert p1.warmup_steps == round(0.2843 * 7038) and p2.warmup_steps == round(0.128 * 1563)
  assert p1.decay_power == p2.decay_power == 0.5
  assert p1.optimizer.kwargs.max_grad_norm == 1.0
  # Phase 2 starts from phase 1's params and optimizer state (NVIDIA's --phase2
  # --resume_from_checkpoint), not from random weights.
  assert not p1.init_from and p2.init_from == "/tmp/nvlamb_1"
  assert p2.init_from_optimizer_state and not p1.init_from_optimizer_state



def test_two_phase_configs():
  """Phase 2 starts from phase 1 (init_from) at seq 512; the paper's step totals."""
  _, l1 = load("bert_large_phase1")
  _, l2 = load("bert_large_phase2")
  assert l1.num_train_steps + l2.num_train_steps == 8599  # the 76-minute run, 64k/32k
  assert (l1.global_batch_size, l2.global_batch_size) == (65536, 32768)
  _, b1 = load("bert_base_phase1")
  _, b2 = load("bert_base_phase2")
  assert b1.num_train_steps + b2.num_train_steps == 15625  # the paper's 32k row
  for p1, p2 in ((l1, l2), (b1, b2)):
    assert (p1.data.max_seq_length, p1.data.max_predictions_per_seq) == (128, 20)
    assert (p2.data.max_seq_length, p2.data.max_predictions_per_seq) == (512, 80)
    assert not p1.init_from and p2.init_from
  for c in (l1, l2, b1, b2):
    assert c.global_batch_size % c.micro_batch_size == 0


@pytest.mark.parametrize("name, arg", [
    ("lamb_paper", "32768"), ("adamw_baseline", None), ("nvlamb", "phase1"),
    ("nvlamb", "phase2"), ("bert_base_phase1", None), ("bert_large_phase2", None)])
def test_pod_recipes_compute_in_bfloat16(name, arg):
  # Compiled for v4-1024, lamb_paper.py in float32 moved 1.4x the HBM bytes and all-reduced its
  # gradients in float32 (docs/tpu.md §6); params, losses and softmaxes stay float32 anyway.
  _, config = load(name, *([arg] if arg else []))
  assert config.model.dtype == "bfloat16"


def test_adamw_baseline_differs_from_lamb_512_in_the_optimizer():
  _, adamw = load("adamw_baseline")
  _, lamb = load("lamb_paper", "512")
  assert adamw.optimizer.name == "adamw" and adamw.global_batch_size == lamb.global_batch_size
  tx, _ = recipes.build_optimizer(adamw)
  with pytest.raises(ValueError, match="ScaleByTrustRatioState"):
    lamb_optax.trust_ratios(tx.init({"w": jnp.ones(2)}))


@pytest.mark.parametrize("name, arg", [("lamb_paper", "1000"), ("nvlamb", "phase3")])
def test_bad_arguments(name, arg):
  with pytest.raises(ValueError, match="choose|pass one"):
    load(name, arg)


def test_recipes_reject_bad_schedules():
  _, config = load("nvlamb", "phase2")
  config.warmup_steps = config.num_train_steps + 1
  with pytest.raises(ValueError, match="longer than the run"):
    recipes.build_optimizer(config)
  _, config = load("nvlamb", "phase2")
  config.decay_power = 0.0
  with pytest.raises(ValueError, match="power"):
    recipes.build_optimizer(config)
  config.optimizer.name = "adagrad"
  with pytest.raises(ValueError, match="Unknown optimizer"):
    recipes.build_optimizer(config)


# ImageNet recipes: (config, argument) and whether the model is a ViT (stacked encoder layers).
IMAGE_RECIPES = [
    ("imagenet_resnet50_lamb", "32768", False), ("imagenet_resnet50_lamb", "65536", False),
    ("imagenet_resnet50_goyal_sgd", None, False),
    ("imagenet_resnet50_mlperf_lars", "8192", False),
    ("imagenet_resnet50_mlperf_lars", "65536", False),
    ("imagenet_vit_adamw", "s16", True), ("imagenet_vit_adamw", "b16", True),
    ("imagenet_vit_lamb", "s16", True), ("imagenet_vit_lamb", "b16", True)]


def _toy_params(vit):
  """Leaf names as the image models name them: kernels decayed; bias and BatchNorm/LayerNorm
  scale not (masks.default_weight_decay_mask)."""
  layers = {"kernel": jnp.full((2, 3, 3), 0.5)} if vit else {"kernel": jnp.full((3, 3), 0.5)}
  return {"layers": layers, "head": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)},
          "norm": {"scale": jnp.ones(3)}}


@pytest.mark.parametrize("name, arg, vit", IMAGE_RECIPES)
def test_image_recipe_builds_and_steps(name, arg, vit):
  module, config = load(name, arg)
  assert all(s in module.__doc__ for s in ("Hardware", "Published result", "python -m"))
  train_config.lock(config)
  train_config.check_schedule(config)
  plan_lib.plan_batches(config, data_parallel_devices=8, process_count=1)
  assert (config.task, config.image.dataset, config.image.augment) == (
      "image_classification", "imagenet2012", "imagenet")
  assert config.image.model == ("vit" if vit else "resnet")
  # The task's stacked axes: 1 for the ViT's stacked encoder layers, 0 elsewhere (ResNet: 0).
  stacked = {"layers": 1 if vit else 0, "head": 0, "norm": 0}
  tx, lr = recipes.build_optimizer(config, stacked_axes=stacked)
  params = _toy_params(vit)
  grads = jax.tree.map(lambda p: 0.1 * jnp.ones_like(p), params)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  assert all(np.isfinite(u).all() for u in jax.tree.leaves(updates))
  w, total = config.warmup_steps, config.num_train_steps
  assert float(lr(0)) == 0.0
  assert float(lr(w)) == pytest.approx(config.learning_rate, rel=1e-6)
  end = (config.learning_rate * config.lr_decay_factor ** len(config.lr_boundaries)
         if config.lr_schedule == "warmup_piecewise" else config.end_learning_rate)
  assert float(lr(total)) == pytest.approx(end, rel=1e-5, abs=1e-9)


def test_lamb_author_runs_follow_run_sh():
  """fastalgo/imagenet_resnet50_lamb: run.sh flags and optimization.py's schedule
  lr(t) = (T − t)·lr/(T − W) after a linear warmup."""
  _, c32 = load("imagenet_resnet50_lamb", "32768")
  _, c64 = load("imagenet_resnet50_lamb", "65536")
  assert (c32.global_batch_size, c32.num_train_steps, c32.warmup_steps) == (32768, 3519, 782)
  assert (c64.global_batch_size, c64.num_train_steps, c64.warmup_steps) == (65536, 1760, 500)
  assert presets.epochs_to_steps(90, 32768) == 3519  # "90 epochs", "warmup for 20 epochs"
  assert presets.epochs_to_steps(20, 32768) == 782
  for c in (c32, c64):
    k = c.optimizer.kwargs
    assert (c.learning_rate, k.weight_decay, k.eps, k.b1, k.b2, k.bias_correction) == (
        0.04, 1.5, 1e-6, 0.9, 0.999, False)
    assert c.image.label_smoothing == 0.1
    # optimization.py: tf.clip_by_global_norm(grads, clip_norm=1.0) before LAMBOptimizer.
    assert (c.optimizer.name, k.max_grad_norm) == ("nvlamb", 1.0)
    _, lr = recipes.build_optimizer(c)
    t_w, t_end = c.warmup_steps, c.num_train_steps
    for t in (t_w // 2, t_w, (t_w + t_end) // 2, t_end - 1):
      expected = 0.04 * t / t_w if t < t_w else (t_end - t) * 0.04 / (t_end - t_w)
      assert float(lr(t)) == pytest.approx(expected, rel=1e-5, abs=1e-9)  # float32 near 0


def test_lamb_matches_the_authors_optimizer():
  """optimization.py's create_optimizer and LAMBOptimizer, three steps in NumPy: gradients
  clipped to global norm 1.0 (the third step's exceed it), raw moments (no bias correction),
  update m/(sqrt(v)+ε) + λx and ratio ‖x‖/‖update‖ on decayed tensors, plain rate on BatchNorm."""
  _, config = load("imagenet_resnet50_lamb", "32768")
  config.learning_rate = 0.01  # a constant-rate comparison; the schedule is tested above
  config.lr_schedule, config.warmup_steps = "warmup_polynomial", 0
  tx, _ = recipes.build_optimizer(config)
  params = {"conv": {"kernel": jnp.array([[0.5, -1.0], [2.0, 0.25]])},
            "bn": {"scale": jnp.array([1.0, 0.5])}}
  grads = [{"conv": {"kernel": jnp.array([[0.1, 0.2], [-0.3, 0.4]])},
            "bn": {"scale": jnp.array([0.2, -0.1])}},
           {"conv": {"kernel": jnp.array([[0.3, -0.1], [0.2, 0.1]])},
            "bn": {"scale": jnp.array([-0.1, 0.3])}},
           {"conv": {"kernel": jnp.array([[2.0, -1.0], [0.5, 3.0]])},
            "bn": {"scale": jnp.array([1.5, -0.5])}}]
  state, x = tx.init(params), params
  ref = {k: np.asarray(v[next(iter(v))], np.float64) for k, v in params.items()}
  m = {k: 0.0 for k in ref}
  v = {k: 0.0 for k in ref}
  for step, g in enumerate(grads):
    rate = 0.01 * (config.num_train_steps - step) / config.num_train_steps  # (T − t)·lr/(T − W)
    gs = {k: np.asarray(g[k][next(iter(g[k]))], np.float64) for k in ref}
    norm = np.sqrt(sum(np.sum(gk ** 2) for gk in gs.values()))
    clip = 1.0 / max(norm, 1.0)  # tf.clip_by_global_norm: g·c/max(‖g‖, c), c = 1
    assert (norm > 1.0) == (step == 2)
    for k in ref:
      gk = gs[k] * clip
      m[k] = 0.9 * m[k] + 0.1 * gk
      v[k] = 0.999 * v[k] + 0.001 * gk ** 2
      update = m[k] / (np.sqrt(v[k]) + 1e-6)
      ratio = 1.0
      if k == "conv":
        update = update + 1.5 * ref[k]
        ratio = np.linalg.norm(ref[k]) / np.linalg.norm(update)
      ref[k] = ref[k] - ratio * rate * update
    u, state = tx.update(g, state, x)
    x = optax.apply_updates(x, u)
  np.testing.assert_allclose(x["conv"]["kernel"], ref["conv"], rtol=1e-6)
  np.testing.assert_allclose(x["bn"]["scale"], ref["bn"], rtol=1e-6)


def test_mlperf_lars_schedule_matches_lars_util():
  """lars_util.poly_rate_schedule (TF, 8192) and train.py polynomial_learning_rate_fn (JAX,
  65536): warmup to the base rate, then (base − 1e-4)·(1 − (t − W)/(T − W + 1))² + 1e-4."""
  runs = {"8192": (17.0, 6875, 0.9, 2e-4), "65536": (23.080977304670448, 1817,
                                                     0.9537213777059405, 1e-4)}
  for arg, (base, total, momentum, wd) in runs.items():
    _, c = load("imagenet_resnet50_mlperf_lars", arg)
    assert (c.learning_rate, c.num_train_steps, c.image.label_smoothing) == (base, total, 0.1)
    k = c.optimizer.kwargs
    assert (k.momentum, k.weight_decay, k.trust_coefficient, k.eps) == (momentum, wd, 0.001, 0.0)
    _, lr = recipes.build_optimizer(c)
    w = c.warmup_steps
    for t in range(w, total + 1, 97):
      expected = (base - 1e-4) * (1 - (t - w) / (total - w + 1)) ** 2 + 1e-4
      # Ours decays over T − W steps, the source over T − W + 1: the fractions differ by at most
      # 1/(T − W + 1), and (1 − x)² moves by at most 2 per unit of x.
      assert abs(float(lr(t)) - expected) <= 2 * base / (total - w + 1) + 1e-5
  _, c = load("imagenet_resnet50_mlperf_lars", "8192")
  assert c.warmup_steps == 781  # w_steps = 5 · 1281167 // 8192 in lars_util.py


def test_optax_lars_matches_tf_lars_optimizer():
  """TF LARSOptimizer (eeta 0.001, skip_list ['batch_normalization', 'bias']), two steps, with
  gradients parallel to the weights so that its ‖g‖ + λ‖x‖ equals optax's ‖g + λx‖."""
  tx = recipes.optax_lars(17.0, momentum=0.9, weight_decay=2e-4, trust_coefficient=0.001)
  w0 = np.array([0.5, -1.0, 2.0])
  params = {"conv": {"kernel": jnp.asarray(w0)}, "fc": {"bias": jnp.array([0.1, 0.2])}}
  state, x = tx.init(params), params
  ref_w, ref_b = w0.astype(np.float64), np.array([0.1, 0.2])
  mom_w, mom_b = 0.0, 0.0
  for c in (0.3, 0.2):
    gw, gb = c * ref_w, np.array([0.05, -0.02])
    trust = 0.001 * np.linalg.norm(ref_w) / (np.linalg.norm(gw) + 2e-4 * np.linalg.norm(ref_w))
    mom_w = 0.9 * mom_w + 17.0 * trust * (gw + 2e-4 * ref_w)
    mom_b = 0.9 * mom_b + 17.0 * gb  # skipped: plain momentum at the base rate, no decay
    ref_w, ref_b = ref_w - mom_w, ref_b - mom_b
    g = {"conv": {"kernel": x["conv"]["kernel"] * c}, "fc": {"bias": jnp.asarray(gb)}}
    u, state = tx.update(g, state, x)
    x = optax.apply_updates(x, u)
  np.testing.assert_allclose(x["conv"]["kernel"], ref_w, rtol=1e-5)
  np.testing.assert_allclose(x["fc"]["bias"], ref_b, rtol=1e-5)


def test_optax_lars_refuses_stacked_layers():
  with pytest.raises(ValueError, match="stacked"):
    recipes.optax_lars(1.0, stacked_axes={"layers": 1})


def test_goyal_step_schedule():
  _, c = load("imagenet_resnet50_goyal_sgd")
  assert (c.global_batch_size, c.learning_rate) == (8192, 0.1 * 8192 / 256)
  k = c.optimizer.kwargs
  assert (c.optimizer.name, k.momentum, k.nesterov, k.weight_decay) == ("sgd", 0.9, False, 1e-4)
  _, lr = recipes.build_optimizer(c)
  epoch = 1_281_167 / 8192
  assert c.num_train_steps == np.ceil(90 * epoch) and c.warmup_steps == np.ceil(5 * epoch)
  for e, rate in ((29.9, 3.2), (30.1, 0.32), (59.9, 0.32), (60.1, 0.032), (80.1, 0.0032)):
    assert float(lr(int(e * epoch))) == pytest.approx(rate, rel=1e-5)


def test_vit_adamw_matches_big_vision_chain():
  """big_vision/optax.py make(): clip, scale_by_adam, scale(lr), add_decayed_weights(wd) on
  kernels, scale_by_schedule, scale(-1) — the same updates as our adamw with wd / lr."""
  _, config = load("imagenet_vit_adamw", "s16")
  config.optimizer.kwargs.mu_dtype = "float32"
  tx, sched = recipes.build_optimizer(config)
  relative = lambda t: sched(t) / config.learning_rate
  mask = {"enc": {"kernel": True, "bias": False}}
  big_vision = optax.chain(
      optax.clip_by_global_norm(1.0), optax.scale_by_adam(),
      optax.scale(1e-3), optax.add_decayed_weights(1e-4, mask),
      optax.scale_by_schedule(relative), optax.scale(-1.0))
  params = {"enc": {"kernel": jnp.array([[0.5, -1.0], [2.0, 0.3]]), "bias": jnp.array([0.1, 0.0])}}
  grads = {"enc": {"kernel": jnp.array([[3.0, -1.0], [0.5, 2.0]]), "bias": jnp.array([1.0, 1.0])}}
  s_ours, s_bv = tx.init(params), big_vision.init(params)
  for _ in range(3):  # clipping is active: the gradient norm is ~4.1
    u_ours, s_ours = tx.update(grads, s_ours, params)
    u_bv, s_bv = big_vision.update(grads, s_bv, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-12),
                 u_ours, u_bv)
  assert config.optimizer.kwargs.weight_decay == pytest.approx(0.1)
  assert (config.global_batch_size, config.warmup_steps) == (1024, 10_000)


@pytest.mark.parametrize("name, arg", [("imagenet_resnet50_lamb", "16384"),
                                       ("imagenet_resnet50_mlperf_lars", "32768"),
                                       ("imagenet_vit_adamw", "l16"), ("imagenet_vit_lamb", "h14")])
def test_image_recipes_refuse_rows_the_sources_do_not_have(name, arg):
  with pytest.raises(ValueError, match="choose|pass one"):
    load(name, arg)


@pytest.mark.parametrize("change, match", [
    ({"lr_schedule": "exponential"}, "Unknown lr_schedule"),
    ({"lr_schedule": "warmup_piecewise"}, "needs lr_boundaries"),
])
def test_check_schedule_names_the_schedule_key(change, match):
  config = train_config.default_config()
  config.update(change)
  with pytest.raises(ValueError, match=match):
    train_config.check_schedule(config)


def _decayed(config):
  """Which leaves of a conv + BatchNorm model the config's optimizer decays (zero gradients)."""
  config.warmup_steps = 0  # a non-zero rate at the first step
  tx, _ = recipes.build_optimizer(config)
  params = {"conv": {"kernel": jnp.ones(2)}, "norm": {"scale": jnp.ones(2), "bias": jnp.ones(2)}}
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  return {"/".join(str(getattr(k, "key", k)) for k in path): bool(jnp.any(u != 0))
          for path, u in jax.tree_util.tree_leaves_with_path(updates)}


def test_documented_optimizer_argument_can_be_added_from_the_command_line():
  """configs/imagenet_resnet50_goyal_sgd.py and docs/image_classification.md say
  --config.optimizer.kwargs.weight_decay_mask=True decays everything; a key the recipe does not
  set could not be added to optimizer.kwargs from the command line."""
  goyal = str(CONFIGS / "imagenet_resnet50_goyal_sgd.py")
  assert _decayed(train_config.load(goyal)) == {
      "conv/kernel": True, "norm/bias": False, "norm/scale": False}
  for value in ("True", "true"):
    config = train_config.load(goyal, [f"--config.optimizer.kwargs.weight_decay_mask={value}"])
    assert config.optimizer.kwargs.weight_decay_mask is True
    train_config.lock(config)
    train_config.check_values(config)
    assert all(_decayed(config).values())
  config = train_config.load(str(CONFIGS / "tiny.py"), ["--config.optimizer.kwargs.b2=0.98"])
  assert config.optimizer.kwargs.to_dict() == {"weight_decay": 0.01, "b2": 0.98}


@pytest.mark.parametrize("override, message", [
    ("--config.optimizer.kwargs.weight_decay_msk=True",
     "no optimizer takes an argument 'weight_decay_msk'. Did you mean \"weight_decay_mask\""),
    ("--config.data.max_seq_lenght=64", "no key 'data.max_seq_lenght'. Did you mean "
                                         "\"max_seq_length\""),
])
def test_keys_added_from_the_command_line_must_exist(override, message):
  with pytest.raises(train_config.ConfigError) as error:
    train_config.load(str(CONFIGS / "tiny.py"), [override])
  assert message in str(error.value)


def test_lock_suggests_the_key_a_misspelt_one_meant():
  config = train_config.default_config()
  config.image.label_smothing = 0.1
  with pytest.raises(ValueError, match=r"\['image.label_smothing'\].*Did you mean "
                                       r"\"label_smoothing\""):
    train_config.lock(config)
