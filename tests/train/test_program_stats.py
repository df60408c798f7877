"""Counting a step's bytes from its optimized HLO: loops with their trips, and a scan's stacked
inputs and outputs touched one slice per step (not whole, which made the count grow with the
square of the depth)."""

import jax
import jax.numpy as jnp

from lamb_optax.train import program_stats


def _scan_program(layers: int, width: int = 256) -> str:
  """A scan over ``layers`` stacked weights that stacks one output per layer (as a layer scan
  saves its residuals)."""
  def f(stacked, x):
    def layer(h, w):
      h = jnp.tanh(h * w)
      return h, h
    return jax.lax.scan(layer, x, stacked)
  args = (jnp.ones((layers, width)), jnp.ones((width,)))
  return jax.jit(f).lower(*args).compile().as_text()


def test_scan_bytes_grow_with_depth_not_its_square():
  small, large = (program_stats.analyse(_scan_program(n)) for n in (8, 32))
  assert list(small.while_loops.values()) == [8] and list(large.while_loops.values()) == [32]
  ratio = large.bytes / small.bytes
  assert 3.0 < ratio < 5.0, ratio  # 4x the layers; counting the stacks whole would give ~13x


def test_dynamic_slice_and_update_in_a_fusion_count_their_slices():
  text = """
HloModule m
%fused (p0: f32[10,64], p1: s32[], p2: f32[10,64]) -> f32[10,64] {
  %p0 = f32[10,64]{1,0} parameter(0)
  %p1 = s32[] parameter(1)
  %z = s32[] constant(0)
  %ds = f32[1,64]{1,0} dynamic-slice(%p0, %p1, %z), dynamic_slice_sizes={1,64}
  %t = f32[1,64]{1,0} tanh(%ds)
  %p2 = f32[10,64]{1,0} parameter(2)
  ROOT %dus = f32[10,64]{1,0} dynamic-update-slice(%p2, %t, %p1, %z)
}
ENTRY %main (a: f32[10,64], i: s32[], b: f32[10,64]) -> f32[10,64] {
  %a = f32[10,64]{1,0} parameter(0)
  %i = s32[] parameter(1)
  %b = f32[10,64]{1,0} parameter(2)
  ROOT %f = f32[10,64]{1,0} fusion(%a, %i, %b), kind=kLoop, calls=%fused
}
"""
  stats = program_stats.analyse(text)
  # reads one row of %a (256 B) and the index (4 B), writes one row of %b in place (256 B)
  assert stats.bytes == 256 + 4 + 256
