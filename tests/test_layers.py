"""Imports point one way: optimizer core -> accelerators/sharding -> models/data -> tasks -> train
-> tpu/bench/studies -> scripts.

Every ``lamb_optax`` import in the package and the scripts (module level or inside a function)
must name a layer at or below the importing module's own.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = {"accelerators": 1, "sharding": 1, "models": 2, "data": 2, "tasks": 3, "train": 4,
          "tpu": 5, "bench": 5, "studies": 5}


def layer(module: str) -> int:
  """A module's layer; command-line entry points (scripts, ``__main__``) sit on top of all."""
  parts = module.split(".")
  if parts[0] == "scripts" or parts[-1] == "__main__":
    return 6
  return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def imports(path: pathlib.Path):
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lamb_optax"):
      yield from (f"{node.module}.{a.name}" for a in node.names)
    elif isinstance(node, ast.Import):
      yield from (a.name for a in node.names if a.name.startswith("lamb_optax"))


def test_no_import_points_upward():
  upward = []
  for path in [*(ROOT / "lamb_optax").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]:
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    upward += [f"{module} -> {name}" for name in imports(path) if layer(name) > layer(module)]
  assert not upward, upward


def test_optimizer_core_imports_only_its_dependencies():
  allowed = {"jax", "optax", "chex", "numpy", "lamb_optax", "__future__"}
  stdlib = {"re", "math", "typing", "collections", "dataclasses", "functools", "inspect",
            "argparse", "time", "abc"}
  for path in (ROOT / "lamb_optax").glob("*.py"):
    if path.name in ("sharding.py", "accelerators.py"):  # below the models, not the optimizer
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
               [a.name for a in node.names] if isinstance(node, ast.Import) else [])
      for name in names:
        top = name.split(".")[0]
        assert top in allowed | stdlib, f"{path.name} imports {name}"
