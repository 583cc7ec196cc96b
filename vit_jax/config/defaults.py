"""Every config key and its default; each experiment config in `configs/` changes what it needs.

Every key an experiment may set exists here, so a typo in a config file or on the command line is an
error (see `vit_jax.config.validate`), never a silently ignored setting. Each default is written
once: `config.model` comes from the fields of `VisionTransformer`, `config.aug` and the data keys
from `vit_jax.data.options` (AugConfig, DataConfig); only the trainer's own keys are written here.
"""

import copy
import dataclasses
import importlib.util
import os
import typing
from typing import Any

import ml_collections

from vit_jax import models
from vit_jax.data.options import AugConfig, DataConfig


def _value(default: Any, annotation: Any):
    """A ConfigDict value: a typed reference for a None default (so overrides are type-checked)."""
    if default is not None:
        return default
    kinds = [t for t in typing.get_args(annotation) if t is not type(None)] or [annotation]
    return ml_collections.FieldReference(None, field_type=kinds[0])


def _from_dataclass(cls, skip=()) -> dict:
    hints = typing.get_type_hints(cls)
    return {
        f.name: _value(f.default, hints[f.name])
        for f in dataclasses.fields(cls)
        if f.name not in skip and f.default is not dataclasses.MISSING
    }


def model_defaults(model_name: str = "vit") -> ml_collections.ConfigDict:
    """`config.model` of family `model_name` (`vit_jax.models.FAMILIES`): a size string (or None)
    and the family's sizes, plus every option of its module with the module's defaults.

    Sizes left None come from `variant`; with `variant=None` all must be given.
    """
    family = models.families.get(model_name)
    hints = typing.get_type_hints(family.module)
    options = {
        k: _value(v, hints[k]) for k, v in family.defaults.items() if k not in family.size_keys
    }
    sizes = {
        k: ml_collections.FieldReference(None, field_type=_size_type(hints[k]))
        for k in family.size_keys
    }
    # typed: may be set to None
    variant = ml_collections.FieldReference(family.default_variant, field_type=str)
    return ml_collections.ConfigDict(dict(variant=variant, **sizes, **options))


def _size_type(annotation: Any):
    """The type a size is given as: `patch_size` as one int, other sizes as annotated."""
    if annotation == typing.Tuple[int, int]:
        return int
    union = typing.get_origin(annotation) is typing.Union
    kinds = [t for t in typing.get_args(annotation) if t is not type(None)] if union else []
    kind = (kinds or [annotation])[0]
    return typing.get_origin(kind) or kind


def aug_defaults() -> ml_collections.ConfigDict:
    """`config.aug`: train-time augmentation and normalisation (`vit_jax.data.options.AugConfig`)."""
    return ml_collections.ConfigDict(_from_dataclass(AugConfig))


def base_config(model_name: str = "vit") -> ml_collections.ConfigDict:
    """All keys with their defaults; `config.model` holds the options of family `model_name`
    ("vit", "resnet", "hybrid": `vit_jax.models.FAMILIES`)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    # Data (vit_jax.data; meanings in vit_jax/data/options.py): dataset "digits",
    # "folder:/path/or.tar.gz" or "tfds:cifar10"; batch sizes are global, over all devices and hosts;
    # eval_batch_size None: batch_size.
    c.update(_from_dataclass(DataConfig, skip=("aug", "seed")))
    c.num_classes = ml_collections.FieldReference(None, field_type=int)  # None: from the dataset
    c.aug = aug_defaults()
    c.model_name = model_name  # the model family; config.model holds its options
    c.model = model_defaults(model_name)

    # Optimisation (vit_jax/train/optim.py).
    c.total_steps = 1000
    c.optimizer = "adamw"  # adamw | sgd | lion | adafactor | bv_adafactor (Scaling ViT)
    c.lr = 1e-3
    c.schedule = "cosine"  # cosine | linear | constant | rsqrt (big_vision's inverse square root)
    c.warmup_steps = 100
    c.cooldown_steps = 0  # the last N steps ramp the lr linearly to 0 (big_vision's cooldown)
    c.rsqrt_timescale = 10_000  # "rsqrt": lr / sqrt(1 + (t - warmup_steps) / rsqrt_timescale)
    c.min_lr_ratio = 0.0
    c.b1 = 0.9
    c.b2 = 0.999
    c.momentum = 0.9  # sgd
    c.weight_decay = 1e-4  # on kernels only (no biases, norms, position tables) unless wd_mults
    # "lr": θ -= lr(t)·wd·θ (optax/PyTorch AdamW); "schedule": θ -= (lr(t)/lr)·wd·θ (big_vision).
    c.weight_decay_form = "lr"
    # Per-parameter rules on "/"-joined parameter paths (first full regex match wins, as big_vision):
    c.lr_mults = ()  # ((regex, multiplier), ...) of the learning rate
    c.wd_mults = ()  # ((regex, multiplier), ...) of weight_decay; () = ((".*/kernel", 1.0),)
    c.frozen = ()  # (regex, ...): parameters that do not train
    c.layer_decay = 0.0  # layer-wise lr decay (BEiT/timm): block i of L gets lr·d^(L-i); 0: off
    c.ema_decay = 0.0  # keep an EMA of the weights (evaluators with weights="ema" use it); 0: off
    c.grad_clip = 1.0  # global norm; 0 disables
    c.grad_accum_steps = 1  # micro-batches per step; batch_size must divide into them
    c.loss = "softmax_xent"  # softmax_xent | sigmoid_xent | mse
    c.label_smoothing = 0.0
    c.freeze_encoder = False  # linear probe: only the head (and pre_logits) train
    c.nan_policy = "stop"  # stop | skip: what a non-finite loss or gradient does

    # Devices.
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))  # -1: all remaining devices
    c.distributed = False  # call jax.distributed.initialize() (multi-host)
    # Seconds to join at start, and after which a silent process counts as dead: every survivor
    # then stops with one line (vit_jax/common/distributed.py).
    c.distributed_timeout_s = 300
    # CPU only (vit_jax/common/cpu_devices.py): split the CPU into N XLA devices and train data parallel
    # across them (step +6-9% on 2 cores); -1: one per core (as many as divide the batch sizes);
    # 0: XLA's single device.
    # Ignored with distributed=True and when JAX has already started.
    c.cpu_devices = 0

    # Fine-tuning (vit_jax/weights/finetune.py). gelu_check: one warning line when the checkpoint's
    # GELU differs from model.gelu_approximate (Google's/big_vision's weights: tanh); False: deliberate.
    # path: .npz, .safetensors (timm, transformers, ours), a folder holding one, or hf://ORG/NAME
    # (local hub cache); from_checkpoint: a .safetensors checkpoint's config.json sets config.model
    # and the eval preprocessing (vit_jax/config/from_checkpoint.py); False: the config's own.
    c.init_from = ml_collections.ConfigDict(
        dict(
            path="", format="auto", posemb_resize="bilinear", skip_head=True, gelu_check=True,
            from_checkpoint=True,
            inflate="repeat",  # vivit from an image checkpoint: repeat | central_frame | random
        )
    )  # fmt: skip

    # Distillation from a frozen teacher (DeiT; vit_jax/train/distill.py):
    # loss = (1 - alpha)·CE(student, labels) + alpha·distill. kind: none | soft (tau²·KL of the
    # tau-softened distributions) | hard (CE against the teacher's argmax). teacher: a finished
    # run's workdir, or an .npz whose model is teacher_model (config.model's keys of family
    # teacher_model_name, set in a config file). With model.distill_token the distillation head
    # learns from the teacher, the class head from the labels.
    c.distill = ml_collections.ConfigDict(
        dict(
            kind="none", teacher="", alpha=0.5, tau=1.0, teacher_model_name="vit",
            teacher_model=ml_collections.ConfigDict(),
        )
    )  # fmt: skip

    # Loop, evaluation, logging, checkpoints.
    c.log_every = 50  # 0: only at the end
    c.eval_every = 500  # 0: only at the end
    c.checkpoint_every = 500  # 0: only at the end (and on SIGTERM/SIGINT)
    c.keep_checkpoints = 3
    c.keep_best = False  # also keep the best checkpoint (by best_metric) under workdir/best
    # Named evaluators (vit_jax/evaluators), e.g. c.evals.val = dict(type="classification",
    # split="validation", image_size=None, every=None, weights="params"); empty: one
    # classification evaluator named "eval" on eval_split every eval_every steps.
    c.evals = ml_collections.ConfigDict()
    c.best_metric = ""  # "NAME/METRIC" choosing the best checkpoint; "": the first evaluator's top1
    c.async_checkpointing = True
    c.allow_config_change = False  # resume a workdir whose saved config differs
    c.progress_bar = True
    # A jax.profiler trace of N train steps, from the second step of each (re)start, into
    # workdir/tb/plugins/profile (TensorBoard's profile plugin; docs/workdirs.md); 0: off.
    c.profile_steps = 0
    return c


def with_model(
    config, model_name: str, variant: str = None, keep_shared: bool = False
) -> ml_collections.ConfigDict:
    """A copy of `config` training family `model_name` instead: the data, optimiser and loop keys
    stay, `config.model` becomes that family's defaults (with `variant`, if given), so
    `with_model(load_config("cifar10.py", relative_to=__file__), "resnet", "R20")` is the CIFAR-10
    recipe with a ResNet-20. `keep_shared`: options both families have keep their values (a ViT
    config's encoder, sizes and variant included, for the hybrid)."""
    c = copy.deepcopy(config)
    c.model_name = model_name
    c.model = model_defaults(model_name)
    if keep_shared:
        c.model.update({k: v for k, v in config.model.items() if k in c.model})
    if variant is not None:
        c.model.variant = variant
    return c


def load_config(path: str, *args, relative_to: str = None) -> ml_collections.ConfigDict:
    """`get_config(*args)` of the config file `path` (relative to the file `relative_to`, if given),
    so one recipe builds on another: `c = load_config("cifar10.py", relative_to=__file__)`."""
    if relative_to is not None:
        path = os.path.join(os.path.dirname(os.path.abspath(relative_to)), path)
    name = "vit_jax_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise FileNotFoundError(f"no config file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*args)


def from_saved(saved: dict) -> ml_collections.ConfigDict:
    """A run's saved `config.json` (a dict) as a full config: keys added to the package since the
    run was saved take their defaults; JSON lists become tuples where the key holds a tuple."""
    c = base_config(saved.get("model_name", "vit"))

    def merge(node, values):
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(node.get(key), ml_collections.ConfigDict):
                if key == "evals":  # named evaluators: taken whole
                    node[key] = ml_collections.ConfigDict(value)
                else:
                    merge(node[key], value)
            elif isinstance(value, list) and isinstance(node.get(key), tuple):
                node[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            else:
                node[key] = value

    merge(c, saved)
    return c
