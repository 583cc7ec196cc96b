"""Mixup and cutmix of a batch with its own reverse (as in timm), giving soft labels.

One lambda per batch. When both are on, each batch uses cutmix with probability 0.5, else mixup.
"""

from vit_jax.data._tf import tf


def sample_beta(seed, alpha: float):
    """A stateless Beta(alpha, alpha) sample, from two gamma samples."""
    gammas = tf.random.stateless_gamma([2], seed, alpha=alpha)
    return gammas[0] / tf.maximum(gammas[0] + gammas[1], 1e-12)


def cutmix_mask(seed, height: int, width: int, lam):
    """A random box covering about (1 - lam) of the image, clipped at the borders.

    Returns:
      (bool [height, width, 1] True inside the box, the exact fraction of the image outside it).
    """
    cut = tf.sqrt(1.0 - lam)
    half_h = tf.cast(height * cut, tf.int32) // 2
    half_w = tf.cast(width * cut, tf.int32) // 2
    y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    cy = tf.random.stateless_uniform([], y_seed, 0, height, tf.int32)
    cx = tf.random.stateless_uniform([], x_seed, 0, width, tf.int32)
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside_y = (rows >= cy - half_h) & (rows < cy + half_h)
    inside_x = (cols >= cx - half_w) & (cols < cx + half_w)
    mask = (inside_y & inside_x)[:, :, None]
    return mask, 1.0 - tf.reduce_mean(tf.cast(mask, tf.float32))


def mix_batch(images, labels, seed, num_classes: int, mixup_alpha: float, cutmix_alpha: float):
    """Mixes a batch with its reverse.

    Args:
      images: float32 [b, h, w, c].
      labels: int32 [b].
      seed: int [2] stateless seed of this batch.
      num_classes: length of the soft labels.
      mixup_alpha: mixup's Beta parameter; 0 disables mixup.
      cutmix_alpha: cutmix's Beta parameter; 0 disables cutmix.

    Returns:
      (mixed images [b, h, w, c], soft labels float32 [b, num_classes] summing to 1).
    """
    onehot = tf.one_hot(labels, num_classes, dtype=tf.float32)
    if not (mixup_alpha or cutmix_alpha):
        return images, onehot
    switch_seed, lam_seed, box_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    partner = tf.reverse(images, [0])

    def mixup():
        lam = sample_beta(lam_seed, mixup_alpha)
        return lam * images + (1.0 - lam) * partner, lam

    def cutmix():
        lam = sample_beta(lam_seed, cutmix_alpha)
        mask, lam = cutmix_mask(box_seed, images.shape[1], images.shape[2], lam)
        return tf.where(mask[None], partner, images), lam

    if mixup_alpha and cutmix_alpha:
        use_cutmix = tf.random.stateless_uniform([], switch_seed) < 0.5
        images, lam = tf.cond(use_cutmix, cutmix, mixup)
    else:
        images, lam = cutmix() if cutmix_alpha else mixup()
    return images, lam * onehot + (1.0 - lam) * tf.reverse(onehot, [0])
