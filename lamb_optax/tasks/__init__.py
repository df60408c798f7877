"""Tasks of the trainer: one module per task, each with ``build(config, mesh, workdir)``.

See :mod:`lamb_optax.tasks.base` for the interface the trainer calls.
"""

from __future__ import annotations

import importlib
from typing import Any

TASKS = {
    "bert_pretraining": "lamb_optax.tasks.bert_pretraining",
    "image_classification": "lamb_optax.tasks.image_classification",
    "docs_classification": "lamb_optax.tasks.docs_classification",
    "glue": "lamb_optax.tasks.glue",
    "squad": "lamb_optax.tasks.squad",
    "text_classification": "lamb_optax.tasks.text_classification",
}


def build(config: Any, mesh: Any, workdir: str | None) -> Any:
  """The task ``config.task`` names, built for ``mesh``.

  ``workdir=None`` builds it without data (shapes only: compiling for another machine).
  """
  if config.task not in TASKS:
    raise ValueError(f"Unknown task {config.task!r}; choose one of {sorted(TASKS)}.")
  return importlib.import_module(TASKS[config.task]).build(config, mesh, workdir)
