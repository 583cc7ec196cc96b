"""Mixup and cutmix: soft labels match the mixed pixels."""

import numpy as np
import pytest

from vit_jax.data._tf import tf
from vit_jax.data.mix import cutmix_mask, mix_batch, sample_beta

SEED = tf.constant([1, 2], tf.int64)


def batch(n=4, size=8):
    images = np.zeros((n, size, size, 3)) + np.arange(n)[:, None, None, None]
    return tf.constant(images, tf.float32), tf.constant(np.arange(n) % 3, tf.int32)


def test_off_gives_one_hot():
    images, labels = batch()
    mixed, soft = mix_batch(images, labels, SEED, 3, 0.0, 0.0)
    np.testing.assert_array_equal(mixed, images)
    np.testing.assert_array_equal(soft, np.eye(3)[[0, 1, 2, 0]])


def test_mixup_weights_pixels_and_labels_alike():
    images, labels = batch()
    mixed, soft = mix_batch(images, labels, SEED, 3, 0.5, 0.0)
    lam = float(mixed[0, 0, 0, 0] - 3) / (0 - 3)  # Example 0 (value 0) mixed with 3 (value 3).
    assert 0 <= lam <= 1
    np.testing.assert_allclose(
        mixed[:, 0, 0, 0], lam * np.arange(4) + (1 - lam) * np.arange(4)[::-1], rtol=1e-5
    )
    np.testing.assert_allclose(soft[1], lam * np.eye(3)[1] + (1 - lam) * np.eye(3)[2], rtol=1e-5)


def test_cutmix_label_weight_is_the_pasted_area():
    images, labels = batch(n=2, size=16)
    mixed, soft = mix_batch(images, labels, SEED, 3, 0.0, 1.0)
    pasted = float(np.mean(mixed[0, :, :, 0] == 1.0))  # Pixels taken from example 1.
    np.testing.assert_allclose(soft[0], [1 - pasted, pasted, 0], atol=1e-6)


def test_cutmix_mask_area_and_beta_range():
    mask, kept = cutmix_mask(SEED, 20, 10, tf.constant(0.75))
    assert mask.shape == (20, 10, 1)
    np.testing.assert_allclose(kept, 1 - np.mean(mask), atol=1e-6)
    samples = [float(sample_beta(tf.constant([0, s], tf.int64), 0.4)) for s in range(50)]
    assert 0 <= min(samples) and max(samples) <= 1 and np.std(samples) > 0.2


@pytest.mark.parametrize("mixup, cutmix", [(0.8, 1.0), (0.2, 0.0), (0.0, 1.0)])
def test_same_seed_same_mix(mixup, cutmix):
    images, labels = batch()
    a = mix_batch(images, labels, SEED, 3, mixup, cutmix)
    b = mix_batch(images, labels, SEED, 3, mixup, cutmix)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(np.sum(a[1], 1), 1.0, rtol=1e-6)
