"""Named model sizes with overrides: the one ``preset`` constructor that ``BertConfig``,
``ResNetConfig`` and ``ViTConfig`` share, so all three check names and merge overrides alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

_Config = TypeVar("_Config")


def from_preset(cls: type[_Config], presets: Mapping[str, Mapping[str, Any]], name: str,
                overrides: Mapping[str, Any], model: str) -> _Config:
  """``cls`` built from ``presets[name]`` with ``overrides`` on top (``cls`` validates it);
  an unknown ``name`` raises a ``ValueError`` listing the presets of ``model``.

  >>> import dataclasses
  >>> @dataclasses.dataclass
  ... class Net:
  ...   width: int = 1
  ...   depth: int = 1
  >>> from_preset(Net, {"wide": {"width": 8}}, "wide", {"depth": 3}, "Net")
  Net(width=8, depth=3)
  >>> from_preset(Net, {"wide": {"width": 8}}, "huge", {}, "Net")
  Traceback (most recent call last):
  ...
  ValueError: Unknown Net preset 'huge'; choose one of ['wide'].
  """
  if name not in presets:
    raise ValueError(f"Unknown {model} preset {name!r}; choose one of {sorted(presets)}.")
  return cls(**{**presets[name], **overrides})
