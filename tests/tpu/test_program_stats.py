"""Counting a step's bytes from its optimized HLO: loops with their trips, and a scan's stacked
inputs and outputs touched one slice per step (not whole, which made the count grow with the
square of the depth)."""

import jax
import jax.numpy as jnp

from lamb_optax.tpu import program_stats


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


def test_async_copies_and_slices_count_what_they_move_once():
  """XLA:TPU's async slice of a (16, 128) bf16 array into on-chip memory (memory space S(1)), an
  async copy there (its tuple is (destination, source, context)) and one back to HBM, as the
  optimized HLO of a train step holds them: HBM bytes are the reads from and writes to HBM."""
  text = """
HloModule m
ENTRY %main (a: bf16[16,128], b: bf16[8,128]) -> (bf16[4,128], bf16[8,128], bf16[8,128]) {
  %a = bf16[16,128]{1,0} parameter(0)
  %b = bf16[8,128]{1,0} parameter(1)
  %ss = ((bf16[16,128]{1,0}), bf16[4,128]{1,0:S(1)}, s32[]) slice-start(%a), slice={[0:4], [0:128]}
  %sd = bf16[4,128]{1,0:S(1)} slice-done(%ss)
  %cs = (bf16[8,128]{1,0:S(1)}, bf16[8,128]{1,0}, u32[]) copy-start(%b)
  %cd = bf16[8,128]{1,0:S(1)} copy-done(%cs)
  %back = (bf16[8,128]{1,0}, bf16[8,128]{1,0:S(1)}, u32[]) copy-start(%cd)
  %bd = bf16[8,128]{1,0} copy-done(%back)
  ROOT %t = (bf16[4,128]{1,0:S(1)}, bf16[8,128]{1,0:S(1)}, bf16[8,128]{1,0}) tuple(%sd, %cd, %bd)
}
"""
  slice_bytes, copied_bytes = 4 * 128 * 2, 8 * 128 * 2
  stats = program_stats.analyse(text)
  assert stats.bytes == slice_bytes + copied_bytes + copied_bytes  # HBM: read, read, write
  assert stats.bytes_all_spaces == 2 * slice_bytes + 4 * copied_bytes


def test_fusion_on_staged_operands_moves_no_hbm_bytes():
  """A fusion reading an array staged in on-chip memory (S(3)) and writing one there."""
  text = """
HloModule m
%fused (p0: f32[64,128], p1: f32[64,128]) -> f32[64,128] {
  %p0 = f32[64,128]{1,0} parameter(0)
  %p1 = f32[64,128]{1,0} parameter(1)
  ROOT %s = f32[64,128]{1,0} add(%p0, %p1)
}
ENTRY %main (a: f32[64,128], b: f32[64,128]) -> f32[64,128] {
  %a = f32[64,128]{1,0:S(3)} parameter(0)
  %b = f32[64,128]{1,0} parameter(1)
  ROOT %f = f32[64,128]{1,0:S(3)} fusion(%a, %b), kind=kLoop, calls=%fused
}
"""
  stats = program_stats.analyse(text)
  assert stats.bytes == 64 * 128 * 4  # only %b comes from HBM
  assert stats.bytes_all_spaces == 3 * 64 * 128 * 4


def test_allocate_buffer_reserves_and_moves_nothing():
  """XLA:TPU reserves the stacks a layer loop saves activations into with an AllocateBuffer
  custom-call (no operands, no data moved); the dynamic-update-slice into it writes its row."""
  text = """
HloModule m
ENTRY %main (x: f32[1,512]) -> f32[24,512] {
  %x = f32[1,512]{1,0} parameter(0)
  %buf = f32[24,512]{1,0} custom-call(), custom_call_target="AllocateBuffer", backend_config={}
  %z = s32[] constant(0)
  ROOT %dus = f32[24,512]{1,0} dynamic-update-slice(%buf, %x, %z, %z)
}
"""
  row = 512 * 4
  stats = program_stats.analyse(text)
  assert stats.bytes == row + 8 + row  # reads x and two indices, writes one row; no reservation
  other = text.replace('custom_call_target="AllocateBuffer"', 'custom_call_target="Sharding"')
  assert program_stats.analyse(other).bytes == stats.bytes + 24 * row  # a real op writes


def test_matmul_flops_of_a_kernel_count_its_grid_and_one_branch():
  """A Pallas kernel's body has one block's shapes; ``platform_dependent`` holds two branches."""
  from jax.experimental import pallas as pl

  def kernel(a_ref, b_ref, o_ref):
    o_ref[...] = a_ref[...] @ b_ref[...]

  def matmul(a, b):
    call = lambda interpret: pl.pallas_call(
        kernel, grid=(4,), in_specs=[pl.BlockSpec((8, 16), lambda i: (i, 0)),
                                     pl.BlockSpec((16, 16), lambda i: (0, 0))],
        out_specs=pl.BlockSpec((8, 16), lambda i: (i, 0)),
        out_shape=jax.ShapeDtypeStruct((32, 16), jnp.float32), interpret=interpret)(a, b)
    return jax.lax.platform_dependent(tpu=lambda: call(False), default=lambda: call(True))

  jaxpr = jax.make_jaxpr(matmul)(jnp.ones((32, 16)), jnp.ones((16, 16)))
  product = 2.0 * 32 * 16 * 16
  assert program_stats.jaxpr_dot_flops(jaxpr) == (product, product)


def test_matmul_flops_of_a_shard_map_body_count_every_shard():
  """The train step accumulates per data shard: its body has per-shard shapes."""
  mesh = jax.make_mesh((4,), ("data",), devices=jax.devices()[:4],
                       axis_types=(jax.sharding.AxisType.Auto,))
  P = jax.sharding.PartitionSpec
  per_shard = lambda a, b: jax.lax.psum(
      jax.lax.scan(lambda c, _: (c + a @ b, None), jnp.zeros((2, 16)), None, length=3)[0], "data")
  with jax.set_mesh(mesh):
    f = jax.shard_map(per_shard, in_specs=(P("data"), P()), out_specs=P(), axis_names={"data"},
                      check_vma=False)
    jaxpr = jax.make_jaxpr(f)(jnp.ones((8, 16)), jnp.ones((16, 16)))
  one_product = 2.0 * 8 * 16 * 16  # the global (8, 16) @ (16, 16)
  assert program_stats.jaxpr_dot_flops(jaxpr) == (3 * one_product, one_product)
