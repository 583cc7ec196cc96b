"""DeiT distillation (`config.distill`, vit_jax/train/distill.py) and the distillation token."""

import functools
import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers.paths import ROOT
from tests.helpers.tiny import batch, tiny_config
from vit_jax import config as config_lib
from vit_jax import create_model
from vit_jax import train as train_lib
from vit_jax.train import distill
from vit_jax.train import step as ts
from vit_jax.train.sharding import make_mesh

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "tiny_run_v0")  # a finished digits run
TINY = dict(patch_size=4, hidden_size=16, depth=2, mlp_dim=32, num_heads=2)


def _np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_kl(student, teacher, tau):
    """tau² · KL(softmax(t/tau) ‖ softmax(s/tau)) per example, in float64."""
    log_p = _np_log_softmax(np.float64(teacher) / tau)
    log_q = _np_log_softmax(np.float64(student) / tau)
    return tau**2 * (np.exp(log_p) * (log_p - log_q)).sum(-1)


def _np_xent(logits, labels):
    return -_np_log_softmax(np.float64(logits))[np.arange(len(labels)), labels]


def _perturbed(variables, seed, scale=0.5):
    """`variables` with every leaf moved randomly (a zero head gives uniform logits)."""
    rng = np.random.default_rng(seed)
    move = lambda x: np.asarray(x) + scale * rng.standard_normal(x.shape).astype(np.float32)
    return jax.tree.map(move, variables)


def _student(config, classes=3):
    config.model.depth = 1  # compiles faster
    mesh = make_mesh(devices=jax.devices()[:1])
    model, tx, schedule, init, _, _ = train_lib.build(config, classes, mesh)
    state = jax.jit(init)()
    state["params"] = _perturbed(state["params"], 1)
    step = functools.partial(ts.train_step, model=model, tx=tx, schedule=schedule)
    return model, state, step


def _random_teacher(classes=3):
    model = create_model(None, classes, **dict(TINY, depth=1), posemb="sincos2d", pool="gap")
    variables = jax.jit(model.init)(jax.random.PRNGKey(7), jnp.zeros((1, 8, 8, 3)))
    return model, _perturbed(variables, 2, scale=1.0)


def _grads(model, state, data, distill=None, teacher=None):
    """Loss and gradients of the step's `_grads` (jitted) on `data`."""
    fn = functools.partial(ts._grads, model, "softmax_xent", 0.0, distill=distill)
    args = (state["params"], {}, data["image"], data["soft_label"], data["label"])
    loss, grads, _, _ = jax.jit(fn)(*args, jax.random.PRNGKey(0), teacher=teacher)
    return loss, grads


def _same_update(new, plain, old):
    np.testing.assert_allclose(np.asarray(new) - old, np.asarray(plain) - old, atol=1e-7)


def test_alpha_zero_equals_plain_training():
    """The existing step and the distillation step with alpha = 0: same loss, same gradients (SGD
    without weight decay: the same update), for both kinds."""
    model, state, step = _student(tiny_config(optimizer="sgd", weight_decay=0.0))
    teacher, tvars = _random_teacher()
    data = batch()
    plain, m_plain = jax.jit(step)(state, data)
    for kind in ("soft", "hard"):
        obj = distill.Objective(teacher, kind, alpha=0.0, tau=2.0)
        new, m = jax.jit(functools.partial(step, distill=obj))(state, data, tvars)
        np.testing.assert_allclose(m["loss"], m_plain["loss"], rtol=1e-6)
        np.testing.assert_allclose(m["grad_norm"], m_plain["grad_norm"], rtol=1e-5)
        np.testing.assert_allclose(m["accuracy"], m_plain["accuracy"])
        jax.tree.map(_same_update, new["params"], plain["params"], state["params"])
    assert float(m_plain["grad_norm"]) > 0


class LabelTeacher(nn.Module):
    """A teacher whose logits are 10 · one_hot(label), the label written in pixel [0, 0, 0]."""

    classes: int = 3

    @nn.compact
    def __call__(self, images, train=False):
        labels = jnp.round(images[:, 0, 0, 0]).astype(jnp.int32)
        return 10.0 * jax.nn.one_hot(labels, self.classes)


def test_hard_distillation_from_a_teacher_equal_to_the_labels_is_cross_entropy():
    model, state, _ = _student(tiny_config())
    data = batch()
    data["image"][:, 0, 0, 0] = data["label"]
    plain_loss, plain_g = _grads(model, state, data)
    np.testing.assert_allclose(  # the plain loss is CE itself (numpy)
        plain_loss,
        _np_xent(model.apply({"params": state["params"]}, data["image"]), data["label"]).mean(),
        rtol=1e-5,
    )
    for alpha in (0.5, 1.0):
        obj = distill.Objective(LabelTeacher(), "hard", alpha=alpha, tau=1.0)
        loss, g = _grads(model, state, data, distill=obj, teacher={})
        np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g, plain_g
        )


def test_soft_loss_is_tau_squared_kl_at_tau_2():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 4)) * 3, rng.normal(size=(5, 4)) * 3
    got = distill.soft_loss(jnp.float32(s), jnp.float32(t), 2.0)
    np.testing.assert_allclose(got, _np_kl(s, t, 2.0), rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(got) > 0)
    np.testing.assert_allclose(distill.soft_loss(jnp.float32(t), jnp.float32(t), 2.0), 0, atol=1e-6)


def test_soft_step_loss_is_the_deit_formula():
    """The jitted step's loss: (1-α)·CE(student, labels) + α·τ²·KL, from separately computed
    student and teacher logits, at τ = 2 and α = 0.3."""
    model, state, step = _student(tiny_config())
    teacher, tvars = _random_teacher()
    data = batch()
    obj = distill.Objective(teacher, "soft", alpha=0.3, tau=2.0)
    _, metrics = jax.jit(functools.partial(step, distill=obj))(state, data, tvars)
    s = np.asarray(model.apply({"params": state["params"]}, data["image"]))
    t = np.asarray(teacher.apply(tvars, data["image"]))
    want = 0.7 * _np_xent(s, data["label"]).mean() + 0.3 * _np_kl(s, t, 2.0).mean()
    np.testing.assert_allclose(metrics["loss"], want, rtol=1e-5)


def test_distillation_token_model_evaluates_to_the_mean_of_its_heads():
    model = create_model(None, 3, **TINY, distill_token=True)
    fresh = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
    # zero-initialised like the class head
    assert not np.any(fresh["params"]["head_dist"]["kernel"])
    assert not np.any(fresh["params"]["head_dist"]["bias"])
    variables = _perturbed(fresh, 3)
    p = variables["params"]
    assert p["dist"].shape == (1, 1, 16) and p["head_dist"]["kernel"].shape == (16, 3)
    # a learned table: one row per prefix token (cls, dist) and per patch
    assert p["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 2 + 4, 16)
    assert model.num_prefix == 2
    images = jnp.asarray(batch()["image"])
    apply = jax.jit(model.apply, static_argnames="train")
    cls, dist = apply(variables, images, train=True)
    out = apply(variables, images, train=False)
    np.testing.assert_array_equal(out, (cls + dist) / 2)
    assert np.abs(np.asarray(cls - dist)).max() > 1e-3  # two different heads
    # the distillation head reads the distillation token: a class-head-only change leaves it
    _, dist2 = apply({"params": dict(p, head=_perturbed(p["head"], 5))}, images, train=True)
    np.testing.assert_array_equal(dist2, dist)
    # without a class token (gap) the distillation token is the only prefix token
    gap = create_model(None, 3, **TINY, pool="gap", distill_token=True)
    gp = jax.eval_shape(gap.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"]
    assert "cls" not in gp and gp["Transformer"]["posembed_input"]["pos_embedding"].shape[1] == 5


def test_distillation_token_model_without_its_heads_is_the_pooled_class_token():
    """Few-shot and k-NN read `model.clone(num_classes=0)`: the vector the class head sees."""
    from vit_jax.evaluators.features import representation_fn  # noqa: PLC0415

    model = create_model(None, 3, **TINY, distill_token=True)
    variables = _perturbed(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3))), 3)
    b = batch()
    images = jnp.asarray(b["image"])
    _, state = model.apply(variables, images, train=False, mutable="intermediates")
    pooled = state["intermediates"]["pre_logits_input"][0]
    fb = dict(image=images, label=jnp.asarray(b["label"]), mask=jnp.ones(len(images)),
              index=jnp.arange(len(images)))  # fmt: skip
    z = representation_fn(model)(variables, fb)["z"]
    assert z.shape == (len(images), 16)
    np.testing.assert_allclose(z, pooled, rtol=1e-5, atol=1e-5)
    # the class head applied to it gives the class head's logits (train=True returns both heads)
    cls, _ = model.apply(variables, images, train=True)
    p = variables["params"]["head"]
    np.testing.assert_allclose(z @ p["kernel"] + p["bias"], cls, rtol=1e-5, atol=1e-5)


@pytest.fixture
def teacher_run(tmp_path):
    workdir = str(tmp_path / "teacher")
    shutil.copytree(FIXTURE, workdir)
    return workdir


def _digits_student(teacher, **kw):
    c = tiny_config(dataset="digits", batch_size=32, eval_batch_size=120, log_every=1, **kw)
    c.distill.teacher = teacher
    c.checkpoint_every = 1000
    c.eval_every = 0
    return c


def test_teacher_from_a_workdir_and_from_an_npz_match_the_inference_loader(teacher_run, tmp_path):
    from vit_jax.tools.inference import load_run  # noqa: PLC0415
    from vit_jax.weights import npz  # noqa: PLC0415

    mesh = make_mesh(devices=jax.devices()[:1])
    ref_model, ref_vars, saved, _ = load_run(teacher_run)
    images = jnp.asarray(batch(classes=10)["image"])
    want = np.asarray(ref_model.apply(ref_vars, images))
    t = distill.load_teacher(_digits_student(teacher_run, **{"distill.kind": "soft"}), 10, mesh)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(t.variables), ref_vars)
    obj = distill.Objective(t.model, "soft", 0.5, 1.0)
    np.testing.assert_allclose(obj.teacher_logits(t.variables, images), want, rtol=1e-6)
    assert np.abs(want).max() > 1e-2  # a trained head, not the zero init

    path = npz.export_npz(ref_vars["params"], str(tmp_path / "teacher.npz"))
    c = _digits_student(path, **{"distill.kind": "hard"})
    c.distill.teacher_model = dict(saved.model)
    config_lib.validate(c, num_devices=1)
    t2 = distill.load_teacher(c, 10, mesh)
    np.testing.assert_allclose(obj.teacher_logits(t2.variables, images), want, rtol=1e-5)

    for source in (teacher_run, path):  # a teacher of other classes than the student's
        c.distill.teacher = source
        with pytest.raises(config_lib.ConfigError, match="has 10 classes, the student 12") as e:
            distill.load_teacher(c, 12, mesh)
        assert "\n" not in str(e.value)


def test_distillation_runs_through_the_loop_with_the_deit_loss(teacher_run, tmp_path):
    """A few soft-distillation steps of a distillation-token student from the finished run: the
    first step's loss is the formula (zero-init heads: uniform student), the run evaluates."""
    from vit_jax import data  # noqa: PLC0415

    c = _digits_student(teacher_run, total_steps=3, **{"distill.kind": "soft"})
    c.distill.update(alpha=0.4, tau=2.0)
    c.model.distill_token = True
    workdir = str(tmp_path / "student")
    result = train_lib.train_and_evaluate(c, workdir)
    assert result["count"] == 360 and 0.0 <= result["top1"] <= 1.0
    rows = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    losses = [r["loss"] for r in rows if r["split"] == "train"]
    assert len(losses) == 3 and np.all(np.isfinite(losses))

    first = next(data.train_iterator(c, start_step=0))
    t = distill.load_teacher(c, 10, make_mesh(devices=jax.devices()[:1]))
    logits = np.asarray(t.model.apply(jax.device_get(t.variables), first["image"]))
    uniform = np.zeros_like(logits)
    want = 0.6 * np.log(10) + 0.4 * _np_kl(uniform, logits, 2.0).mean()
    np.testing.assert_allclose(losses[0], want, rtol=1e-5)


def _valid():
    c = tiny_config()
    config_lib.validate(c, num_devices=1)
    return c


@pytest.mark.parametrize(
    "changes,key",
    [
        (dict(kind="kd"), "distill.kind"),
        (dict(alpha=-0.1), "distill.alpha"),
        (dict(alpha=1.5), "distill.alpha"),
        (dict(tau=0.0), "distill.tau"),
        (dict(tau=-1.0), "distill.tau"),
        (dict(kind="soft"), "distill.teacher"),  # no teacher
        (dict(kind="hard", teacher="/no/such/run"), "distill.teacher"),
        (dict(kind="hard", teacher=ROOT), "distill.teacher"),  # a folder without config.json
        (dict(kind="soft", teacher="NPZ"), "distill.teacher_model"),  # .npz without its model
        (
            dict(kind="soft", teacher=FIXTURE, teacher_model=dict(variant="B/16")),
            "distill.teacher_model",
        ),
        (dict(model_distill_token=True), "model.distill_token"),  # a token without a teacher
    ],
)
def test_bad_distill_config_is_one_line(changes, key, tmp_path):
    c = _valid()
    changes = dict(changes)
    if changes.get("teacher") == "NPZ":
        changes["teacher"] = str(tmp_path / "t.npz")
        open(changes["teacher"], "wb").write(b"PK")
    if changes.pop("model_distill_token", False):
        c.model.distill_token = True
    c.distill.update(changes)
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.validate(c, num_devices=1)
    assert "\n" not in str(e.value) and f"config.{key}" in str(e.value), str(e.value)


def test_a_valid_distill_config_passes(teacher_run):
    c = _valid()
    c.distill.update(kind="hard", teacher=teacher_run, alpha=1.0)
    c.model.distill_token = True
    config_lib.validate(c, num_devices=1)
