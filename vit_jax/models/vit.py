"""The Vision Transformer (Flax linen).

Module names are chosen so parameter paths equal the keys of Google's released ViT checkpoints:
`embedding`, `cls`, `Transformer/posembed_input/pos_embedding`,
`Transformer/encoderblock_{i}/{LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0}`,
`Transformer/encoder_norm`, `pre_logits`, `head`.

Per-block tokens are recorded with `sow` in the `intermediates` collection
(`Transformer/block_{i}`); see `get_features`.

`scan=True` runs the blocks under `flax.linen.scan`: one module `Transformer/encoderblock` whose
variables have a leading `[depth]` axis (`vit_jax.models.scan` converts between the layouts);
`remat=True` rematerialises each block in the backward pass, saving what `remat_policy` names.
"""

import functools
from typing import Any, Dict, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models.attention import MultiHeadDotProductAttention
from vit_jax.models.heads import HEADS
from vit_jax.models.layers import DropPath, LayerScale, MlpBlock
from vit_jax.models.norms import NORMS
from vit_jax.models.pooling import POOLS
from vit_jax.models.posemb import POSEMB, Grid
from vit_jax.models.tokenizers import TOKENIZERS


class Encoder1DBlock(nn.Module):
    """One transformer block: attention and MLP, each a residual branch.

    Every attribute is set by `VisionTransformer` (whose fields hold the defaults):
      mlp_dim, num_heads: sizes. norm / norm_placement: norm name and `pre` or `post`.
      dropout_rate, attention_dropout_rate, drop_path_rate: regularisation in training.
      layer_scale: initial LayerScale value, or None for no LayerScale.
      qk_norm, attn_impl, rope: forwarded to the attention layer.
      kernels: the kernel set of every layer (`vit_jax.kernels`).
    A call's `drop_path` overrides drop_path_rate (a traced rate under scan; 0 still means off).
    """

    mlp_dim: int
    num_heads: int
    norm: str
    norm_placement: str
    dropout_rate: float
    attention_dropout_rate: float
    drop_path_rate: float
    layer_scale: Optional[float]
    qk_norm: bool
    attn_impl: str
    kernels: str
    rope: Optional[Any]
    gelu_approximate: bool
    dtype: Any
    param_dtype: Any
    lsa: bool = False  # Locality Self-Attention in the attention layer
    norm_eps: float = 1e-6

    @nn.compact
    def __call__(self, x, grid: Grid, num_prefix: int, train: bool = False, drop_path=None):
        norm = functools.partial(NORMS.get(self.norm), kernels=self.kernels, epsilon=self.norm_eps)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        pre = self.norm_placement == "pre"

        y = norm(train=train, name="LayerNorm_0", **kw)(x) if pre else x
        y = MultiHeadDotProductAttention(
            self.num_heads, self.attention_dropout_rate, self.qk_norm, self.attn_impl,
            self.kernels, self.rope, name="MultiHeadDotProductAttention_0", lsa=self.lsa, **kw,
        )(y, grid=grid, num_prefix=num_prefix, train=train)  # fmt: skip
        y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
        y = LayerScale(self.layer_scale, name="ls1")(y) if self.layer_scale else y
        x = x + DropPath(self.drop_path_rate)(y, train=train, rate=drop_path)
        x = x if pre else norm(train=train, name="LayerNorm_0", **kw)(x)

        y = norm(train=train, name="LayerNorm_1", **kw)(x) if pre else x
        y = MlpBlock(
            self.mlp_dim, self.dropout_rate, self.gelu_approximate, self.kernels, name="MlpBlock_0",
            **kw,
        )(y, train=train)  # fmt: skip
        y = LayerScale(self.layer_scale, name="ls2")(y) if self.layer_scale else y
        x = x + DropPath(self.drop_path_rate)(y, train=train, rate=drop_path)
        return x if pre else norm(train=train, name="LayerNorm_1", **kw)(x)


# Remat policies by name: what a rematerialised block keeps from its forward pass.
REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,  # keep only the block's input
    "dots": jax.checkpoint_policies.dots_saveable,  # keep every matmul output
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # weight matmuls
    "everything": jax.checkpoint_policies.everything_saveable,  # keep all: no recomputation
}


class Encoder(nn.Module):
    """Position embedding, `depth` blocks with linearly increasing drop-path, final norm.

    `block` holds the Encoder1DBlock options shared by all blocks; `VisionTransformer` sets all.
    With `scan` the blocks are one scanned module `encoderblock` (each block's drop-path rate a
    scanned input; the stacked per-block tokens are sown as `block_{i}` when collected).
    """

    depth: int
    block: Dict[str, Any]
    posemb: str
    dropout_rate: float
    drop_path_rate: float
    final_norm: bool
    remat: bool
    prefix_posemb: bool
    dtype: Any
    param_dtype: Any
    rope_options: Optional[Dict[str, Any]] = None  # coords, ref_grid of a rotary scheme
    remat_policy: str = "full"
    scan: bool = False
    block_cls: Any = None  # the block module (default Encoder1DBlock; vivit's factorised block)

    @nn.compact
    def __call__(self, x, grid: Grid, num_prefix: int, train: bool = False, registers=None):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        scheme = POSEMB.get(self.posemb)
        in_attention = scheme.rotary or getattr(scheme, "bias", False)  # inside every block
        rope = scheme
        if scheme.rotary and self.rope_options:
            rope = functools.partial(scheme, **self.rope_options)
        if not in_attention:
            y = scheme(param_dtype=self.param_dtype, name="posembed_input")(x, grid, num_prefix)
            # prefix_posemb=False: prefix (CLS) tokens get no position (big_vision's convention);
            # a `learn` table keeps its prefix rows (checkpoint layout), unused.
            x = y if self.prefix_posemb else y.at[:, :num_prefix].set(x[:, :num_prefix])
        if registers is not None:  # after the position embedding: registers have no position
            regs = jnp.tile(registers.astype(x.dtype), (x.shape[0], 1, 1))
            x = jnp.concatenate([x[:, :num_prefix], regs, x[:, num_prefix:]], axis=1)
            num_prefix += registers.shape[1]
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)

        block = self.block_cls or Encoder1DBlock
        if self.remat:  # inside scan, CSE cannot merge the recomputation with the forward pass
            policy = REMAT_POLICIES[self.remat_policy]
            block = nn.remat(
                block, static_argnums=(2, 3, 4), policy=policy, prevent_cse=not self.scan
            )
        opts = dict(dropout_rate=self.dropout_rate, rope=rope if in_attention else None)
        opts.update(self.block, **kw)
        rates = [self.drop_path_rate * i / max(self.depth - 1, 1) for i in range(self.depth)]
        if self.scan:
            collect = self.is_mutable_collection("intermediates")

            def body(blk, x, rate):
                x = blk(x, grid, num_prefix, train, rate)
                return x, (x if collect else None)

            scanned = nn.scan(
                body, variable_axes={True: 0}, split_rngs={"params": True, "dropout": True},
                length=self.depth,
            )  # fmt: skip
            blk = block(drop_path_rate=self.drop_path_rate, name="encoderblock", **opts)
            x, tokens = scanned(blk, x, jnp.asarray(rates, jnp.float32))
            for i in range(self.depth if collect else 0):
                self.sow("intermediates", f"block_{i}", tokens[i])
        for i in range(0 if self.scan else self.depth):
            x = block(drop_path_rate=rates[i], name=f"encoderblock_{i}", **opts)(
                x, grid, num_prefix, train
            )
            self.sow("intermediates", f"block_{i}", x)
        if self.final_norm:
            norm = NORMS.get(self.block["norm"])
            eps = self.block.get("norm_eps", 1e-6)
            kernels = self.block["kernels"]
            x = norm(train=train, kernels=kernels, name="encoder_norm", epsilon=eps, **kw)(x)
        return x


class VisionTransformer(nn.Module):
    """ViT: patchify (conv, stride = patch) → [CLS] → encoder → pool → [pre-logits] → head.

    Input images `[B, H, W, C]` with H and W divisible by the patch size (non-square allowed).
    Output: `[B, num_classes]` float32 logits; features `[B, D]` if `num_classes` is 0/None; all
    tokens `[B, P + N, D]` with `pool='none'` and no head. With `distill_token` (DeiT, Touvron et
    al. 2021) a second prefix token `dist` follows `cls` and has its own head `head_dist` (same head
    type, reading the token after the encoder norm, no pre-logits): with `train=True` the output is
    the pair `(class-head logits, distillation-head logits)`, at evaluation (`train=False`) their
    mean. Build it with `vit_jax.create_model`;
    `vit_jax.MODEL_OPTIONS` lists every option. The defaults of these fields are the defaults of
    `create_model` and of `config.model` (vit_jax/config/defaults.py derives them from here).
    """

    num_classes: Optional[int]
    patch_size: Tuple[int, int]
    hidden_size: int
    depth: int
    mlp_dim: int
    num_heads: int
    posemb: str = "learn"
    pool: str = "token"
    cls_token: Optional[bool] = None
    norm: str = "layernorm"
    norm_placement: str = "pre"
    final_norm: bool = True
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    layer_scale: Optional[float] = None
    qk_norm: bool = False
    head: str = "classification"
    representation_size: Optional[int] = None
    head_bias: bool = True
    head_bias_init: float = 0.0
    gelu_approximate: bool = False
    dtype: Any = "float32"
    param_dtype: Any = "float32"
    attn_impl: str = "auto"  # resolved by vit_jax.kernels.resolve before the model is built
    kernels: str = "auto"  # likewise: "stock" or "cpu" (vit_jax/kernels/__init__.py)
    remat: bool = False  # recompute each block in the backward pass: less memory, more compute
    remat_policy: str = "full"  # what remat keeps: a name in vit_jax.models.vit.REMAT_POLICIES
    scan: bool = False  # blocks under nn.scan: stacked params, compile time flat in depth
    num_registers: int = 0  # "Vision Transformers Need Registers" (Darcet et al. 2024)
    prefix_posemb: bool = True  # False: no position embedding on the CLS token (big_vision)
    rope_coords: str = "index"  # rotary schemes: "index" or "reference" (posemb.ROPE_COORDS)
    rope_ref_grid: Optional[int] = None  # the reference grid of rope_coords="reference"
    # Small-data ViTs (vit_jax/models/tokenizers.py): "patch", "conv" (CCT; patch_size = its
    # downsampling), "spt" (shifted patches); the conv stages; Locality Self-Attention.
    tokenizer: str = "patch"
    conv_layers: int = 1  # tokenizer="conv": conv-ReLU-max-pool stages
    conv_kernel: int = 3  # tokenizer="conv": their kernel side
    lsa: bool = False  # learned softmax temperature, no attention to itself (Lee et al. 2021)
    distill_token: bool = False  # DeiT's distillation token and head (see the class docstring)
    norm_eps: float = 1e-6  # the blocks' and final norm's epsilon (transformers' ViT: 1e-12)

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def params_dtype(self):
        return jnp.dtype(self.param_dtype)

    @property
    def num_prefix(self) -> int:
        use_cls = self.pool == "token" if self.cls_token is None else self.cls_token
        return int(use_cls) + int(self.distill_token)

    def _stem(self, images):
        """What the patch embedding sees: the images here; a ResNet's feature map in the hybrid
        family (`vit_jax.models.hybrid`). Called inside `__call__`, so it may create modules."""
        return images

    @property
    def stem_stride(self) -> int:
        """Downsampling of `_stem` (1 here): the image side must be a multiple of
        stem_stride * patch_size."""
        return 1

    @nn.compact
    def __call__(self, images, *, train: bool = False):
        _, height, width, _ = images.shape
        ph, pw = self.patch_size
        sh, sw = ph * self.stem_stride, pw * self.stem_stride  # a hybrid's stem, then the patch
        if height % sh or width % sw:
            raise ValueError(
                f"image size {height}x{width} is not divisible by the patch size {sh}x{sw}; "
                "resize the images or pick another patch size"
            )
        kw = dict(dtype=self.compute_dtype, param_dtype=self.params_dtype)
        x = self._stem(images.astype(self.compute_dtype))
        if x.shape[1] % ph or x.shape[2] % pw:
            raise ValueError(
                f"the stem's {x.shape[1]}x{x.shape[2]} feature map of {height}x{width} images is "
                f"not divisible by the patch size {ph}x{pw}; resize the images"
            )
        x = TOKENIZERS.get(self.tokenizer)(x, model=self, patch=(ph, pw))  # [B, h, w, D]
        b, h, w, d = x.shape
        x = x.reshape(b, h * w, d)  # [B, N, D], row-major patches
        if self.num_prefix > self.distill_token:
            cls = self.param("cls", nn.initializers.zeros, (1, 1, d), self.params_dtype)
            x = jnp.concatenate([jnp.tile(cls.astype(x.dtype), (b, 1, 1)), x], axis=1)
        if self.distill_token:  # the last prefix token, after `cls`
            if self.pool == "none":  # without a head (num_classes=0) the output is the pooled
                raise ValueError("distill_token needs a pool other than 'none'")  # class token
            dist = self.param("dist", nn.initializers.normal(0.02), (1, 1, d), self.params_dtype)
            dist, i = jnp.tile(dist.astype(x.dtype), (b, 1, 1)), self.num_prefix - 1
            x = jnp.concatenate([x[:, :i], dist, x[:, i:]], axis=1)

        block = dict(
            mlp_dim=self.mlp_dim,
            num_heads=self.num_heads,
            norm=self.norm,
            norm_placement=self.norm_placement,
            attention_dropout_rate=self.attention_dropout_rate,
            layer_scale=self.layer_scale,
            qk_norm=self.qk_norm,
            attn_impl=self.attn_impl,
            kernels=self.kernels,
            gelu_approximate=self.gelu_approximate,
            lsa=self.lsa,
            norm_eps=self.norm_eps,
        )
        registers = None
        if self.num_registers:
            init = nn.initializers.normal(0.02)
            registers = self.param("registers", init, (1, self.num_registers, d), self.params_dtype)
        x = Encoder(
            self.depth, block, self.posemb, self.dropout_rate, self.drop_path_rate,
            self.final_norm, self.remat, self.prefix_posemb, name="Transformer", **kw,
            rope_options=dict(coords=self.rope_coords, ref_grid=self.rope_ref_grid),
            remat_policy=self.remat_policy, scan=self.scan,
        )(x, (h, w), self.num_prefix, train, registers)  # fmt: skip
        if self.num_registers:  # registers take part in attention only: not pooled, not output
            p = self.num_prefix
            x = jnp.concatenate([x[:, :p], x[:, p + self.num_registers :]], axis=1)
        dist = x[:, self.num_prefix - 1] if self.distill_token else None
        x = POOLS.get(self.pool)(x, num_prefix=self.num_prefix, model=self)
        self.sow("intermediates", "pre_logits_input", x)

        if self.representation_size:
            x = nn.tanh(nn.Dense(self.representation_size, name="pre_logits", **kw)(x))
        if not self.num_classes:
            return x.astype(jnp.float32)
        head = HEADS.get(self.head)
        x = head(
            self.num_classes, use_bias=self.head_bias, bias_init=self.head_bias_init, **kw
        )(x)  # fmt: skip
        if self.distill_token:
            hd = head(self.num_classes, use_bias=self.head_bias, bias_init=self.head_bias_init,
                      name="head_dist", **kw)(dist).astype(jnp.float32)  # fmt: skip
            return (x.astype(jnp.float32), hd) if train else (x.astype(jnp.float32) + hd) / 2
        return x.astype(jnp.float32)


def get_features(model: VisionTransformer, variables, images, train: bool = False):
    """Per-block tokens and the pooled vector for `images`.

    Returns:
      dict with `block_{i}`: `[B, P + N, D]` tokens after encoder block i, and `pre_logits_input`:
      the pooled `[B, D]` vector the head sees.
    """
    _, state = model.apply(variables, images, train=train, mutable=["intermediates"])
    found = flax.traverse_util.flatten_dict(state["intermediates"])
    return {k[-1]: v[0] for k, v in found.items() if k[-1] != "attention_weights"}
