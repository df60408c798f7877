"""The LAMB vs AdamW demo (`python -m lamb_optax.demo`) runs and learns."""

from lamb_optax import demo


def test_demo_runs_and_both_optimizers_reduce_the_loss(capsys):
  demo.main(["--steps=30", "--batch_size=64", "--width=16", "--depth=2", "--log_every=29"])
  out = capsys.readouterr().out
  rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
  (first_step, lamb_first, adamw_first), (last_step, lamb_last, adamw_last) = rows[0], rows[-1]
  assert (first_step, last_step) == ("0", "29")
  assert float(lamb_last) < 0.5 * float(lamb_first)
  assert float(adamw_last) < 0.5 * float(adamw_first)
  assert "Dense_0/kernel" in out and "Dense_0/bias" not in out
