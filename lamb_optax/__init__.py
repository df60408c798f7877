"""lamb_optax: LAMB (You et al., 2019) as composable Optax transforms.

The optimizer package imports only jax, optax, chex and numpy; the BERT model, data pipeline and
trainer live in ``lamb_optax.models``, ``lamb_optax.data`` and ``lamb_optax.train``.
"""

from lamb_optax import schedules
from lamb_optax.aliases import adamw_baseline
from lamb_optax.aliases import lamb
from lamb_optax.aliases import lars
from lamb_optax.aliases import nlamb
from lamb_optax.aliases import nnlamb
from lamb_optax.aliases import nvlamb
from lamb_optax.diagnostics import trust_ratio_summary
from lamb_optax.masks import default_weight_decay_mask
from lamb_optax.masks import path_mask
from lamb_optax.transforms import ScaleByTrustRatioState
from lamb_optax.transforms import scale_by_adam
from lamb_optax.transforms import scale_by_nesterov_adam
from lamb_optax.transforms import scale_by_trust_ratio
from lamb_optax.transforms import trust_ratios

__version__ = "0.1.0"

__all__ = [
    "ScaleByTrustRatioState",
    "adamw_baseline",
    "lars",
    "nlamb",
    "nnlamb",
    "nvlamb",
    "scale_by_nesterov_adam",
    "default_weight_decay_mask",
    "lamb",
    "path_mask",
    "scale_by_adam",
    "scale_by_trust_ratio",
    "schedules",
    "trust_ratio_summary",
    "trust_ratios",
]
