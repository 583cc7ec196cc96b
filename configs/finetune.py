"""Fine-tuning a pretrained ViT (the ViT paper's recipe, Appendix B.1.1) on CIFAR-10/100.

  python -m vit_jax.main --config=configs/finetune.py:cifar10 --workdir=DIR \
      --config.init_from.path=ViT-B_16.npz --config.dataset=folder:/path/to/cifar10-jpg.tar.gz

SGD momentum 0.9, batch 512, cosine decay with 500 warmup steps, global-norm clip 1.0, no weight
decay, 10k steps (CIFAR), resolution 384 (224 also works: position tables are resized on load).
The head is replaced by a zero-initialised one for the new classes. Expected (paper, ViT-B/16 from
ImageNet-21k at 384): CIFAR-10 98.1-99.0%, CIFAR-100 87-91%.
Argument: `cifar10` (default) or `cifar100` (tfds:cifar100).
"""

from vit_jax.config import base_config


def get_config(arg: str = "cifar10"):
    c = base_config()  # Inception crop 8-100% and flip; global-norm clip 1.0; cosine schedule
    c.dataset = {"cifar10": "tfds:cifar10", "cifar100": "tfds:cifar100"}.get(arg, arg)
    c.image_size = 384
    c.batch_size = 512
    c.model.variant = "B/16"
    c.model.dtype = "bfloat16"
    c.optimizer = "sgd"  # momentum 0.9 (the default)
    c.lr = 0.03
    c.weight_decay = 0.0
    c.total_steps = 10_000
    c.warmup_steps = 500
    # init_from.path: set on the command line (the pretrained .npz); skip_head=True by default.
    c.eval_every = 1000
    c.checkpoint_every = 1000
    return c
