"""Image classification data: the UCI digits (offline default) and TFDS ImageNet, with the standard
augmentations, as random-access sources for the Grain loader (:mod:`lamb_optax.data.loader`).

Examples are ``{"image": float32 (H, W, C), "label": int32 ()}``. Augmentations are pure
functions of ``(seed, position in the global stream)``, so they are new every epoch, the same
after a resume, and independent of the number of hosts.

* Digits: scikit-learn's copy of the UCI handwritten digits (1,797 8×8 grey images, 10 classes;
  shipped inside the scikit-learn wheel, no download), cut into train/validation/test by a fixed
  permutation of ``split_seed``; pixels standardised by the train split's mean and std.
* ImageNet: TFDS ``imagenet2012`` in ``array_record`` format, read with ``tfds.data_sources``
  (random access, no TensorFlow needed to read). Training: Inception-style random-resized crop
  (scale 0.08-1, aspect 3/4-4/3) to ``image_size`` and a horizontal flip; evaluation: resize the
  shorter side to ``image_size / 0.875`` (256 for 224) and take the centre crop; both then
  normalised by the ImageNet channel mean/std.

>>> splits = digits_splits(split_seed=0)
>>> {k: len(v) for k, v in splits.items()}
{'train': 1257, 'validation': 180, 'test': 360}
>>> example = splits["train"][0]
>>> example["image"].shape, example["image"].dtype, example["label"].dtype
((8, 8, 1), dtype('float32'), dtype('int32'))
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

# Digits held out (20% and 10% of 1,797, multiples of 4 and 8 so that eval batches divide them
# on 4 or 8 devices); the other 1,257 train.
DIGITS_TEST_SIZE = 360
DIGITS_VALIDATION_SIZE = 180
# ImageNet channel statistics of RGB pixels in [0, 1] (torchvision, MLPerf reference).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# Evaluation resizes to image_size / 0.875 before the centre crop: 256 -> 224 (He et al.).
EVAL_CROP_FRACTION = 0.875


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  image_size: int
  channels: int
  num_classes: int


class ArraySource:
  """Random access to ``{"image", "label"}`` examples held in two arrays."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self.images, self.labels = images.astype(np.float32), labels.astype(np.int32)

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {"image": self.images[index], "label": self.labels[index]}


def digits_splits(split_seed: int = 0) -> dict[str, ArraySource]:
  """The UCI digits cut into ``train``/``validation``/``test`` by a permutation of
  ``split_seed``."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1) in [0, 1]
  order = np.random.default_rng(split_seed).permutation(len(images))
  n_test, n_val = DIGITS_TEST_SIZE, DIGITS_VALIDATION_SIZE
  parts = {"train": order[n_test + n_val:], "validation": order[n_test:n_test + n_val],
           "test": order[:n_test]}
  train = images[parts["train"]]
  mean, std = train.mean(), train.std()
  return {name: ArraySource((images[idx] - mean) / std, digits.target[idx])
          for name, idx in parts.items()}


DIGITS_INFO = DatasetInfo(image_size=8, channels=1, num_classes=10)


# ------------------------------------------------------------------------------------------------
# ImageNet augmentation (NumPy + Pillow)
# ------------------------------------------------------------------------------------------------
def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  pil = Image.fromarray(np.asarray(image, np.uint8).squeeze(-1) if image.shape[-1] == 1 else
                        np.asarray(image, np.uint8))
  out = np.asarray(pil.resize((width, height), Image.BILINEAR))
  return out[..., None] if out.ndim == 2 else out


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator,
                            scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                            attempts: int = 10) -> tuple[int, int, int, int]:
  """``(top, left, h, w)`` of an Inception-style crop (torchvision's ``RandomResizedCrop``):
  an area fraction in ``scale`` and a log-uniform aspect ratio in ``ratio``; after ``attempts``
  misses, the largest centred crop with an aspect ratio in ``ratio``.

  >>> random_resized_crop_box(100, 50, np.random.default_rng(0), attempts=0)  # fallback: centre
  (16, 0, 67, 50)
  """
  area = height * width
  for _ in range(attempts):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    h, w = height, int(round(height * ratio[1]))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def normalize(image: np.ndarray) -> np.ndarray:
  """uint8 RGB -> float32 standardised by the ImageNet channel mean/std."""
  return ((np.asarray(image, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def train_augment(image: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
  """Random-resized crop to ``size``×``size`` and a horizontal flip with probability 1/2."""
  top, left, h, w = random_resized_crop_box(image.shape[0], image.shape[1], rng)
  out = _resize(image[top:top + h, left:left + w], size, size)
  if rng.uniform() < 0.5:
    out = out[:, ::-1]
  return normalize(out)


def eval_crop_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
  """``(new height, new width, top, left)``: resize so the shorter side is ``size / 0.875``, then
  the centred ``size``×``size`` crop.

  >>> eval_crop_box(300, 400, 224)
  (256, 341, 16, 58)
  """
  short = int(round(size / EVAL_CROP_FRACTION))
  if height <= width:
    new_h, new_w = short, int(round(width * short / height))
  else:
    new_h, new_w = int(round(height * short / width)), short
  return new_h, new_w, (new_h - size) // 2, (new_w - size) // 2


def eval_preprocess(image: np.ndarray, size: int) -> np.ndarray:
  """Resize the shorter side to ``size / 0.875`` and take the centre ``size``×``size`` crop."""
  new_h, new_w, top, left = eval_crop_box(image.shape[0], image.shape[1], size)
  resized = _resize(image, new_h, new_w)
  return normalize(resized[top:top + size, left:left + size])


@dataclasses.dataclass(frozen=True)
class Augment:
  """The training transform of the loader: ``(position, example) -> example`` (picklable).

  ``kind`` "imagenet": :func:`train_augment` on uint8 images; "none": the image as stored. Labels
  are checked against ``num_classes`` here, where each example passes once per epoch.
  """

  seed: int
  kind: str
  image_size: int
  num_classes: int

  def __call__(self, index: int, example: dict[str, Any]) -> dict[str, np.ndarray]:
    label = check_label(example["label"], self.num_classes)
    image = example["image"]
    if self.kind == "imagenet":
      image = train_augment(image, np.random.default_rng([self.seed, index]), self.image_size)
    return {"image": np.asarray(image, np.float32), "label": label}


@dataclasses.dataclass(frozen=True)
class EvalTransform:
  """Held-out preprocessing: "imagenet" resize + centre crop, "none" as stored."""

  kind: str
  image_size: int
  num_classes: int

  def __call__(self, example: dict[str, Any]) -> dict[str, np.ndarray]:
    label = check_label(example["label"], self.num_classes)
    image = example["image"]
    if self.kind == "imagenet":
      image = eval_preprocess(image, self.image_size)
    return {"image": np.asarray(image, np.float32), "label": label}


def check_label(label: Any, num_classes: int) -> np.ndarray:
  """The label as int32; a ValueError naming the fix when it is outside ``[0, num_classes)``."""
  value = int(np.asarray(label))
  if not 0 <= value < num_classes:
    raise ValueError(f"Label {value} is outside [0, {num_classes}): the dataset has more classes "
                     "than the model's head, or its labels are not 0-based. Check the dataset "
                     "and image.num_classes.")
  return np.asarray(value, np.int32)


# ------------------------------------------------------------------------------------------------
# TFDS (ImageNet)
# ------------------------------------------------------------------------------------------------
PREPARE_IMAGENET = (
    "TFDS cannot download ImageNet: download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar "
    "from https://image-net.org into <data_dir>/downloads/manual/, then build it once in the "
    "array_record format that Grain reads: `pip install tensorflow tensorflow-datasets` and "
    "`tfds build imagenet2012 --data_dir=<data_dir> --file_format=array_record` (about 150 GB, "
    "hours). Then pass --config.image.data_dir=<data_dir>.")


class _TfdsSource:
  """A TFDS data source as ``{"image": uint8 HWC, "label"}`` (drops the other features)."""

  def __init__(self, source):
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    example = self.source[index]
    return {"image": np.asarray(example["image"]), "label": np.asarray(example["label"])}


def tfds_splits(name: str, data_dir: str, splits: tuple[str, ...]) -> dict[str, Any]:
  """Random-access sources of a prepared TFDS dataset; a ValueError saying how to prepare it."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
    prepared = builder.is_prepared()
  except Exception as e:  # pylint: disable=broad-except  (unknown name, unreadable directory)
    raise ValueError(f"TFDS dataset {name!r} cannot be opened in data_dir={data_dir!r}: {e}. "
                     + (PREPARE_IMAGENET if name.startswith("imagenet") else "")) from None
  if not prepared:
    hint = PREPARE_IMAGENET if name.startswith("imagenet") else (
        f"Build it once with `tfds build {name} --data_dir=<data_dir> --file_format=array_record`.")
    raise ValueError(f"TFDS dataset {name!r} is not prepared in data_dir={data_dir!r}. {hint}")
  sources = tfds.data_sources(name, data_dir=data_dir or None, split=list(splits))
  return {split: _TfdsSource(source) for split, source in zip(splits, sources, strict=True)}
