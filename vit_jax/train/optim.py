"""Learning-rate schedule and optimizer, all from `config`: clipping, the optimizer with its form of
weight decay, per-parameter rules (learning-rate and decay multipliers, layer-wise decay, frozen
parameters) and an optional EMA of the weights. Everything is an optax transformation.

Weight decay comes in two forms (`config.weight_decay_form`), so a config can state a paper's number
as the paper's code applies it:

  "lr"        θ ← θ − lr(t)·wd·θ       optax / PyTorch AdamW, the ViT paper's flax.optim.Adam
                                        (SGD: wd·θ added to the gradient, as torch.optim.SGD)
  "schedule"  θ ← θ − (lr(t)/lr)·wd·θ   big_vision (`optax.py`), Loshchilov & Hutter's AdamW: the
                                        decay follows the schedule's multiplier, not the peak lr

e.g. wd=1e-4 at peak lr 1e-3 shrinks the weights by 1e-7 per step in the "lr" form and by 1e-4 in
the "schedule" form. Per-parameter rules follow big_vision's `lr_mults` / `wd_mults` / frozen
schedules (regex → value, first full match wins, on "/"-joined parameter paths such as
"Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel") and timm/BEiT's layer-wise lr decay.
The rules name the blocks one by one also for a model with `scan=True` (stacked blocks): where they
treat all blocks alike they apply to the stacked arrays; where they differ (layer_decay), and for
Adafactor (whose factoring depends on the shapes), the optimizer runs on the per-block view of the
stacked arrays (`on_blocks`), so a scanned model trains as the unrolled one does.
"""

import re
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import optax

from vit_jax.models import scan
from vit_jax.weights.npz import HEAD_KEYS

WEIGHT_DECAY_FORMS = ("lr", "schedule")


def make_schedule(config) -> optax.Schedule:
    """Linear warmup from 0 to `config.lr`, then cosine / linear decay to `lr * min_lr_ratio`,
    constant, or big_vision's "rsqrt" (lr / sqrt(1 + (t - warmup) / rsqrt_timescale)); with
    `cooldown_steps` > 0 the last steps ramp linearly to 0 (big_vision's cooldown, any schedule)."""
    peak, warm, total = config.lr, config.warmup_steps, config.total_steps
    end = peak * config.min_lr_ratio
    if config.schedule == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(0.0, peak, warm, total, end)
    else:
        decay_steps = max(total - warm, 1)
        if config.schedule == "linear":
            after = optax.linear_schedule(peak, end, decay_steps)
        elif config.schedule == "rsqrt":
            scale = float(config.rsqrt_timescale)
            after = lambda t: peak / jnp.sqrt(1.0 + t / scale)  # noqa: E731  (t counts from warmup)
        else:  # constant
            after = optax.constant_schedule(peak)
        warmup = optax.linear_schedule(0.0, peak, max(warm, 1))
        schedule = optax.join_schedules([warmup, after], [warm])
    if not config.cooldown_steps:
        return schedule
    cool = float(config.cooldown_steps)
    return lambda t: schedule(t) * jnp.minimum(1.0, (total - t) / cool)


# ------------------------------------------------------------------ per-parameter rules
def param_names(params) -> Dict[Tuple[str, ...], str]:
    """{path tuple: "a/b/kernel"} for every leaf of `params`."""
    return {k: "/".join(k) for k in flax.traverse_util.flatten_dict(params)}


def first_match(rules: Sequence, name: str, what: str) -> Optional[Any]:
    """The value of the first `(regex, value)` rule whose regex fully matches `name`, or None."""
    for pattern, value in rules:
        try:
            if re.fullmatch(pattern, name):
                return value
        except re.error as e:
            raise ValueError(f"config.{what}: bad regex {pattern!r} ({e})") from None
    return None


def layer_ids(names: Sequence[str]) -> Dict[str, int]:
    """BEiT/timm layer ids: patch embedding, CLS, registers and position table 0; block i → i + 1; the final
    norm, pooling and head L + 1 (L blocks)."""
    blocks = {n: int(m.group(1)) for n in names if (m := re.search(r"encoderblock_(\d+)/", n))}
    top = max(blocks.values(), default=-1) + 2
    early = re.compile(r"^(embedding|cls|registers)(/|$)|posembed")
    return {n: blocks[n] + 1 if n in blocks else 0 if early.search(n) else top for n in names}


class Rule(NamedTuple):
    """How one parameter trains: frozen, or with these lr and weight-decay multipliers."""

    frozen: bool
    lr_mult: float
    wd_mult: float


def param_rules(config, params) -> Dict[Tuple[str, ...], Rule]:
    """The `Rule` of every parameter (by path tuple) from `frozen`, `freeze_encoder`, `lr_mults`,
    `layer_decay` and `wd_mults` (default: decay the `kernel`s only, as big_vision's
    `[(".*/kernel$", 1.0)]`)."""
    names = param_names(params)
    ids = layer_ids(list(names.values()))
    top = max(ids.values(), default=0)
    frozen = tuple((p, True) for p in config.frozen)
    out = {}
    for path, name in names.items():
        is_frozen = bool(first_match(frozen, name, "frozen")) or (
            config.freeze_encoder and path[0] not in HEAD_KEYS
        )
        lr_mult = first_match(config.lr_mults, name, "lr_mults")
        lr_mult = 1.0 if lr_mult is None else float(lr_mult)
        if config.layer_decay:
            lr_mult *= config.layer_decay ** (top - ids[name])
        wd_mult = first_match(config.wd_mults, name, "wd_mults") if config.wd_mults else None
        if wd_mult is None:
            wd_mult = 0.0 if config.wd_mults else float(path[-1] == "kernel")
        out[path] = Rule(is_frozen, lr_mult, float(wd_mult))
    return out


def stacked_rules(rules: Dict[Tuple[str, ...], Rule]) -> Optional[Dict[Tuple[str, ...], Rule]]:
    """The rules of per-block parameters (`encoderblock_{i}`) for the stacked layout (`scan=True`,
    `encoderblock`), or None when the blocks' rules differ (layer_decay, a rule naming a block)."""
    out: Dict[Tuple[str, ...], Rule] = {}
    for path, rule in rules.items():
        key = tuple(scan.BLOCK if re.fullmatch(rf"{scan.BLOCK}_\d+", p) else p for p in path)
        if out.setdefault(key, rule) != rule:
            return None
    return out


def on_blocks(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` applied to the per-block view of stacked blocks (`scan=True`): per-block rules work as
    for an unrolled model, and the state is laid out as an unrolled run's."""

    def init(params):
        return tx.init(scan.unstack_blocks(params))

    def update(updates, state, params=None):
        view = None if params is None else scan.unstack_blocks(params)
        updates, state = tx.update(scan.unstack_blocks(updates), state, view)
        return scan.stack_blocks(updates), state

    return optax.GradientTransformation(init, update)


def decay_mask(params):
    """True for weight matrices (`kernel`); biases, norms, CLS and position tables are not decayed."""
    flat = flax.traverse_util.flatten_dict(params)
    return flax.traverse_util.unflatten_dict({k: k[-1] == "kernel" for k in flat})


# ------------------------------------------------------------------ optimizer
def decay_coefficient(config, lr_mult: float = 1.0, wd_mult: float = 1.0) -> float:
    """The decay optax's optimizers get: they apply θ ← θ − lr_mult·lr(t)·(u + c·θ), so c = wd for
    the "lr" form and wd / (lr_mult·lr) for the "schedule" form (θ shrinks by (lr(t)/lr)·wd)."""
    wd = config.weight_decay * wd_mult
    return wd / (lr_mult * config.lr) if config.weight_decay_form == "schedule" else wd


def _optimizer(config, lr, decay: float, mask) -> optax.GradientTransformation:
    """`config.optimizer` with learning rate `lr` (a schedule) and decay `decay` on `mask`."""
    name = config.optimizer
    if name == "adamw":
        return optax.adamw(lr, b1=config.b1, b2=config.b2, weight_decay=decay, mask=mask)
    if name == "lion":
        return optax.lion(lr, b1=config.b1, b2=config.b2, weight_decay=decay, mask=mask)
    if name == "bv_adafactor":  # big_vision's scale_by_adafactor, then decay and lr as below
        core = bv_adafactor(momentum=config.b1 or None)
        wd = optax.add_decayed_weights(decay, mask) if decay else optax.identity()
        return optax.chain(core, wd, optax.scale_by_learning_rate(lr))
    if name == "adafactor":  # optax adds its decay after the lr: scale by the lr last instead
        core = optax.adafactor(None, weight_decay_rate=decay or None, weight_decay_mask=mask)
        return optax.chain(core, optax.scale_by_learning_rate(lr, flip_sign=False))
    momentum = config.momentum or None
    if config.weight_decay_form == "schedule":  # decoupled, as big_vision's sgd + momentum_hp
        trace = optax.trace(momentum) if momentum else optax.identity()
        wd = optax.add_decayed_weights(decay, mask)
        return optax.chain(trace, wd, optax.scale_by_learning_rate(lr))
    # "lr": the decay joins the gradient (momentum included), as torch.optim.SGD's weight_decay.
    return optax.chain(
        optax.add_decayed_weights(decay, mask) if decay else optax.identity(),
        optax.sgd(lr, momentum=momentum),
    )


def bv_adafactor(
    momentum: Optional[float] = 0.9, decay_rate: float = 0.8, beta2_cap: float = 0.999
):
    """big_vision's Adafactor ("Scaling Vision Transformers", Zhai et al. 2022; big_vision/optax.py
    `scale_by_adafactor`): the factored second moment (rows and columns of each matrix of 32 or
    more, decay 1 - t^-0.8 capped at 0.999, no update clipping), then momentum `b1` kept in
    bfloat16 (half the memory of a float32 first moment). Learning rate and decay come after it."""

    def decay_rate_fn(step, exponent):
        t = jnp.asarray(step, jnp.float32) + 1.0
        return jnp.minimum(beta2_cap, 1.0 - t ** (-exponent))

    rms = optax.scale_by_factored_rms(
        factored=True, decay_rate=decay_rate, min_dim_size_to_factor=32, epsilon=1e-30,
        decay_rate_fn=decay_rate_fn,
    )  # fmt: skip
    if not momentum:
        return rms
    return optax.chain(rms, optax.ema(momentum, debias=False, accumulator_dtype=jnp.bfloat16))


def _scaled(schedule, mult: float):
    return schedule if mult == 1.0 else (lambda step: mult * schedule(step))


def make_optimizer(config, params=None) -> optax.GradientTransformation:
    """Global-norm clipping of the trained parameters' gradients, then `config.optimizer` with its
    weight decay for each group of parameters with the same multipliers (`param_rules`); frozen
    parameters get zero updates; the EMA of the weights (`ema_decay`) comes last.

    `params` (arrays or shapes) is needed for per-parameter rules; without it every parameter
    follows the default rule (lr × 1, decay on kernels). Without rules the chain is
    `clip → optimizer`, the same state as runs saved before rules existed.
    """
    schedule = make_schedule(config)
    if params is None:
        if uses_param_rules(config):
            raise ValueError(
                "make_optimizer needs params for per-parameter rules (frozen, *_mults)"
            )
        rules = None
        groups = {"all": (1.0, 1.0)}
    per_block = False
    if params is not None:
        stacked = scan.is_stacked(params)  # rules are stated for the blocks one by one
        rules = param_rules(config, scan.unstack_blocks(params) if stacked else params)
        if stacked:  # factored second moments depend on the arrays' shapes: per block too
            per_block = stacked_rules(rules) is None or "adafactor" in config.optimizer
            rules = rules if per_block else stacked_rules(rules)
        groups = _groups(rules)
    clip = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip else []

    mask = decay_mask if rules is None else _tree({k: r.wd_mult > 0 for k, r in rules.items()})

    def group_optimizer(lr_mult, wd_mult):
        c = decay_coefficient(config, lr_mult, wd_mult)
        return _optimizer(config, _scaled(schedule, lr_mult), c, mask)

    if len(groups) == 1 and not (rules and any(r.frozen for r in rules.values())):
        tx = optax.chain(*clip, group_optimizer(*next(iter(groups.values()))))
    else:
        txs = {label: group_optimizer(*mults) for label, mults in groups.items()}
        txs["frozen"] = optax.set_to_zero()
        labels = _tree({k: _label(r, groups) for k, r in rules.items()})
        trained = _tree({k: not r.frozen for k, r in rules.items()})
        clip = [optax.masked(c, trained) for c in clip]  # the norm of what trains
        tx = optax.chain(*clip, optax.multi_transform(txs, labels))
    tx = on_blocks(tx) if per_block else tx
    if config.ema_decay:
        tx = optax.chain(tx, ema_params(config.ema_decay))
    return tx


def uses_param_rules(config) -> bool:
    """Whether `config` sets any per-parameter rule."""
    return bool(
        config.frozen or config.freeze_encoder or config.lr_mults or config.wd_mults
        or config.layer_decay
    )  # fmt: skip


def _tree(flat: Dict[Tuple[str, ...], Any]):
    return flax.traverse_util.unflatten_dict(flat)


def _groups(rules: Dict[Tuple[str, ...], Rule]) -> Dict[str, Tuple[float, float]]:
    """{label: (lr multiplier, decay multiplier)}: one optimizer per lr multiplier and non-zero
    decay multiplier; undecayed parameters join a group of their lr multiplier (whose decay mask
    leaves them out)."""
    by_lr: Dict[float, set] = {}
    for r in rules.values():
        if not r.frozen:
            by_lr.setdefault(r.lr_mult, set()).add(r.wd_mult)
    out = {}
    for lr_mult, wds in sorted(by_lr.items()):
        for wd in sorted(w for w in wds if w > 0) or [0.0]:
            out[f"lr{lr_mult:g}_wd{wd:g}"] = (lr_mult, wd)
    return out


def _label(rule: Rule, groups: Dict[str, Tuple[float, float]]) -> str:
    if rule.frozen:
        return "frozen"
    same_lr = [k for k, (lr, _) in groups.items() if lr == rule.lr_mult]
    return next((k for k in same_lr if groups[k][1] == rule.wd_mult), same_lr[0])


# ------------------------------------------------------------------ EMA of the weights
class EmaParamsState(NamedTuple):
    """The exponential moving average of the parameters after each update."""

    ema: Any


def ema_params(decay: float) -> optax.GradientTransformation:
    """Keeps `ema ← decay·ema + (1 − decay)·(params + updates)` in the optimizer state (starting at
    the initial params, as timm's ModelEmaV2); the updates pass through unchanged. Place it last in
    the chain; read the average with `ema_of(opt_state)`."""

    def init(params):
        return EmaParamsState(ema=jax.tree.map(jnp.asarray, params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("ema_params needs the params passed to update()")
        new = optax.apply_updates(params, updates)
        ema = jax.tree.map(
            lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), state.ema, new
        )
        return updates, EmaParamsState(ema=ema)

    return optax.GradientTransformation(init, update)


def ema_of(opt_state) -> Optional[Any]:
    """The EMA of the weights held in `opt_state` by `ema_params`, or None when there is none."""
    found = [
        s.ema
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, EmaParamsState))
        if isinstance(s, EmaParamsState)
    ]
    return found[0] if found else None


def trainable_mask(
    params: Dict[str, Any],
    freeze_encoder: bool,
    *,
    trainable: Sequence[str] = HEAD_KEYS,
) -> Dict[str, Any]:
    """Which parameters train: a pytree of bools shaped like `params`.

    With `freeze_encoder` only the top-level modules in `trainable` (`head`, `pre_logits`) are True
    (linear probe); otherwise everything is. Use it with `optax.masked(opt, mask)`, or

        labels = jax.tree.map(lambda t: "train" if t else "freeze", mask)
        tx = optax.multi_transform({"train": opt, "freeze": optax.set_to_zero()}, labels)

    Args:
      params: model parameters (only the structure is used).
      freeze_encoder: freeze everything but `trainable`.
      trainable: top-level parameter names that always train.
    """
    return {
        name: jax.tree.map(lambda _, n=name: not freeze_encoder or n in trainable, sub)
        for name, sub in params.items()
    }
