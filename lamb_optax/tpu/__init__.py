"""Compiling the trainer's step for a Cloud TPU slice on any machine, and reading the result.

:mod:`~lamb_optax.tpu.compile_for` builds the very step the trainer runs for a slice's topology
(libtpu compiles it without a TPU) and reports memory, FLOPs, bytes and a roofline estimate;
:mod:`~lamb_optax.tpu.program_stats` counts what XLA's own cost analysis misses. The trainer runs
them with ``python -m lamb_optax.train --config=C --compile_for=v4-128``.

:mod:`~lamb_optax.tpu.pod` builds ``scripts/tpu_pod.py``'s gcloud commands and worker scripts, and
:mod:`~lamb_optax.tpu.pod_checks` refuses what cannot work before any gcloud call.
"""
