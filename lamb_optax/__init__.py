"""lamb_optax: LAMB as composable Optax transforms, and a Flax BERT pretraining stack."""

__version__ = "0.1.0"
