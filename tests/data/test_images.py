"""ImageNet-style augmentation on synthetic arrays (no downloads), and the digits splits."""

import numpy as np

from lamb_optax.data import images


def synthetic(height=300, width=400, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_train_augment_shapes_ranges_and_determinism():
  image = synthetic()
  augment = images.Augment(seed=3, kind="imagenet", image_size=224, num_classes=1000)
  a = augment(7, {"image": image, "label": 5})
  b = augment(7, {"image": image, "label": 5})
  c = augment(8, {"image": image, "label": 5})
  assert a["image"].shape == (224, 224, 3) and a["image"].dtype == np.float32
  np.testing.assert_array_equal(a["image"], b["image"])  # same seed and position: same crop
  assert not np.array_equal(a["image"], c["image"])  # next position: another crop
  low = (0 - images.IMAGENET_MEAN) / images.IMAGENET_STD
  high = (1 - images.IMAGENET_MEAN) / images.IMAGENET_STD
  assert np.all(a["image"] >= low - 1e-5) and np.all(a["image"] <= high + 1e-5)
  assert int(a["label"]) == 5


def test_random_resized_crops_stay_inside_with_the_recipes_area_and_aspect():
  rng = np.random.default_rng(0)
  for _ in range(200):
    top, left, h, w = images.random_resized_crop_box(300, 400, rng)
    assert 0 <= top and top + h <= 300 and 0 <= left and left + w <= 400
    assert 0.08 * 0.9 <= h * w / (300 * 400) <= 1.0
    assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_eval_crop_is_centred_after_resizing_the_shorter_side_to_256():
  assert images.eval_crop_box(300, 400, 224) == (256, 341, 16, 58)
  assert images.eval_crop_box(500, 256, 224) == (500, 256, 138, 16)
  # A constant image with a marked centre: the crop keeps the centre in the middle.
  image = np.zeros((512, 512, 3), np.uint8)
  image[248:264, 248:264] = 255
  out = images.eval_preprocess(image, 224)
  assert out.shape == (224, 224, 3)
  bright = np.argwhere(out[..., 0] > 0)
  np.testing.assert_allclose(bright.mean(axis=0), [111.5, 111.5], atol=1.0)


def test_flip_is_horizontal_and_happens_about_half_the_time():
  image = np.broadcast_to(np.arange(0, 256, 4, dtype=np.uint8)[None, :, None], (64, 64, 3))
  image = np.ascontiguousarray(image)  # brighter to the right
  augment = images.Augment(seed=0, kind="imagenet", image_size=32, num_classes=10)
  flipped = 0
  for i in range(200):
    out = augment(i, {"image": image, "label": 0})["image"][..., 0]
    flipped += out[:, -1].mean() > out[:, 0].mean()
  assert 70 < flipped < 130


def test_digits_splits_are_fixed_by_seed_and_disjoint():
  a, b = images.digits_splits(0), images.digits_splits(0)
  np.testing.assert_array_equal(a["test"].images, b["test"].images)
  assert {k: len(v) for k, v in a.items()} == {"train": 1257, "validation": 180, "test": 360}
  other = images.digits_splits(1)
  assert not np.array_equal(a["test"].labels, other["test"].labels)
  assert abs(float(a["train"].images.mean())) < 1e-5  # standardised by the train split
