"""Multi-clip evaluation (`clips=K`): K evenly spaced windows per clip, logits averaged. K=1 is the
centre-window evaluation; K=3 equals the mean of the per-window logits computed here by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import data, evaluators, models
from vit_jax.config import base_config
from vit_jax.data import clips, video
from vit_jax.data.options import read_config
from vit_jax.models.losses import LOSSES

TINY = dict(patch_size=4, hidden_size=16, depth=1, mlp_dim=32, num_heads=2, pool="gap")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_tree")
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / "test" / c).mkdir(parents=True)
        for i, n in enumerate((6, 8, 11)):  # room for 4-frame windows: 2, 4, 7
            np.save(root / "test" / c / f"{i}.npy", rng.integers(0, 256, (n, 10, 12, 3), np.uint8))
    c = base_config("vivit")
    c.dataset, c.image_size, c.eval_batch_size, c.clip_stride = f"folder:{root}", 8, 4, 1
    c.model.variant = None
    c.model.update(dict(TINY, tubelet_size=2, num_frames=4, posemb="learn_sep"))
    c.evals = dict(centre=dict(), one=dict(clips=1), three=dict(clips=3))
    model = models.from_config(c.model, 2, "vivit")
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 8, 8, 3)))
    noise = np.random.default_rng(1)  # the head starts at zero: perturb every weight
    variables = jax.tree.map(lambda x: x + 0.3 * noise.standard_normal(x.shape), variables)
    return c, model, variables


def _by_hand(config, model, variables, windows: int):
    """(mean loss, top-1) of the logits averaged over `windows` windows, one window at a time."""
    cfg = read_config(config)
    source = data.open_source(config.dataset, "test")
    losses, hits = [], []
    for path, label in zip(source.paths, source.labels):
        clip = clips.read_clip(path)
        logits = []
        for start in clips.window_starts(len(clip), 4, 1, windows):
            x = video.eval_clip(clips.sample(clip, 4, 1, start), 8, cfg.aug).numpy()
            logits.append(model.apply(variables, x[None], train=False)[0])
        mean = jnp.mean(jnp.stack(logits), axis=0)
        losses.append(float(LOSSES["softmax_xent"](mean[None], jax.nn.one_hot([label], 2))[0]))
        hits.append(int(jnp.argmax(mean)) == label)
    return np.mean(losses), np.mean(hits)


def test_k_windows_average_the_per_window_logits(run):
    config, model, variables = run
    context = evaluators.Context(model, put=lambda b: b)
    got = {e.name: e.run(context, variables) for e in evaluators.from_config(config)}
    assert got["one"] == got["centre"] and got["three"]["count"] == 6
    for name, k in (("centre", 1), ("three", 3)):
        loss, top1 = _by_hand(config, model, variables, k)
        np.testing.assert_allclose(got[name]["loss"], loss, rtol=1e-5)
        assert got[name]["top1"] == top1
    assert abs(got["three"]["loss"] - got["centre"]["loss"]) > 1e-4  # the windows differ


def test_bad_clips_options_are_one_line(run):
    config = run[0].copy_and_resolve_references()
    config.evals = dict(bad=dict(clips=0))
    assert "config.evals.bad: clips=0 must be a positive int" in evaluators.spec_errors(config)
    image = base_config("vit")
    image.evals = dict(multi=dict(clips=2))
    assert "averages windows of video clips" in evaluators.spec_errors(image)


def test_knn_reads_the_centre_window_when_the_run_averages_windows(run):
    config, model, variables = run
    context = evaluators.Context(model, put=lambda b: b)
    scores = []
    for k in (1, 3):
        c = config.copy_and_resolve_references()
        c.eval_clips, c.evals = k, dict(knn=dict(type="knn", train_split="test", k=2))
        (knn,) = evaluators.from_config(c)
        scores.append(knn.run(context, variables))
        context.new_round()
    assert scores[0] == scores[1] and scores[0]["count"] == 6
