"""Defaults shared by every experiment config in `configs/`; each config overrides what it needs.

Every key an experiment may set exists here, so a typo in a config file or on the command line is an
error (see `vit_jax.config_validate`), never a silently ignored setting.
"""

import ml_collections


def model_defaults() -> ml_collections.ConfigDict:
    """`config.model`: the size string plus any `vit_jax.MODEL_OPTIONS`."""
    return ml_collections.ConfigDict(
        dict(
            variant="Ti/16",
            # None: taken from the variant's size string.
            hidden_size=ml_collections.FieldReference(None, field_type=int),
            depth=ml_collections.FieldReference(None, field_type=int),
            mlp_dim=ml_collections.FieldReference(None, field_type=int),
            num_heads=ml_collections.FieldReference(None, field_type=int),
            posemb="learn",
            pool="token",
            norm="layernorm",
            norm_placement="pre",
            final_norm=True,
            dropout_rate=0.0,
            attention_dropout_rate=0.0,
            drop_path_rate=0.0,
            layer_scale=ml_collections.FieldReference(None, field_type=float),
            qk_norm=False,
            head="classification",
            representation_size=ml_collections.FieldReference(None, field_type=int),
            head_bias=True,
            head_bias_init=0.0,
            gelu_approximate=False,
            dtype="float32",
            param_dtype="float32",
            attn_impl="auto",  # cuDNN fused attention on GPU, `manual` on CPU, XLA on TPU
            remat=False,
            cls_token=ml_collections.FieldReference(None, field_type=bool),
        )
    )


def aug_defaults() -> ml_collections.ConfigDict:
    """`config.aug`: train-time augmentation and normalisation (read by `vit_jax.data`)."""
    return ml_collections.ConfigDict(
        dict(
            crop_area_min=0.08,
            crop_area_max=1.0,
            crop_aspect=(3 / 4, 4 / 3),
            flip=True,
            randaug_n=0,
            randaug_m=10,
            mixup_alpha=0.0,
            cutmix_alpha=0.0,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            eval_crop_pct=1.0,
        )
    )


def base_config() -> ml_collections.ConfigDict:
    """All keys with their defaults."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    # Data (vit_jax.data): "digits", "folder:/path/or.tar.gz", "tfds:cifar10".
    c.dataset = "digits"
    c.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.train_split = "train"
    c.eval_split = "test"
    c.image_size = 224
    c.num_classes = ml_collections.FieldReference(None, field_type=int)  # None: from the dataset
    c.batch_size = 256  # global, over all devices and hosts
    c.eval_batch_size = 256
    c.shuffle_buffer = 10_000
    c.prefetch = 2
    c.skip_corrupt = False  # True: skip and count unreadable images instead of failing
    c.download = False  # tfds only: allow downloading/preparing the dataset
    c.data_threads = ml_collections.FieldReference(None, field_type=int)  # None: all cores
    c.image_key = "image"  # tfds feature names
    c.label_key = "label"
    c.aug = aug_defaults()
    c.model = model_defaults()

    # Optimisation (vit_jax.optim).
    c.total_steps = 1000
    c.optimizer = "adamw"  # adamw | sgd | lion | adafactor
    c.lr = 1e-3
    c.schedule = "cosine"  # cosine | linear | constant
    c.warmup_steps = 100
    c.min_lr_ratio = 0.0
    c.b1 = 0.9
    c.b2 = 0.999
    c.momentum = 0.9  # sgd
    c.weight_decay = 1e-4  # decoupled; applied to kernels only (no biases, norms, position tables)
    c.grad_clip = 1.0  # global norm; 0 disables
    c.grad_accum_steps = 1  # micro-batches per step; batch_size must divide into them
    c.loss = "softmax_xent"  # softmax_xent | sigmoid_xent | mse
    c.label_smoothing = 0.0
    c.freeze_encoder = False  # linear probe: only the head (and pre_logits) train
    c.nan_policy = "stop"  # stop | skip: what a non-finite loss or gradient does

    # Devices.
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))  # -1: all remaining devices
    c.distributed = False  # call jax.distributed.initialize() (multi-host)
    # CPU only (vit_jax/cpu_devices.py): split the CPU into N XLA devices and train data parallel
    # across them (step +6-9% on 2 cores); -1: one per core (as many as divide the batch sizes);
    # 0: XLA's single device.
    # Ignored with distributed=True and when JAX has already started.
    c.cpu_devices = 0

    # Fine-tuning (vit_jax.finetune).
    c.init_from = ml_collections.ConfigDict(
        dict(path="", format="auto", posemb_resize="bilinear", skip_head=True)
    )

    # Loop, evaluation, logging, checkpoints.
    c.log_every = 50  # 0: only at the end
    c.eval_every = 500  # 0: only at the end
    c.checkpoint_every = 500  # 0: only at the end (and on SIGTERM/SIGINT)
    c.keep_checkpoints = 3
    c.keep_best = False  # also keep the best checkpoint by eval top-1 under workdir/best
    c.async_checkpointing = True
    c.allow_config_change = False  # resume a workdir whose saved config differs
    c.progress_bar = True
    return c
