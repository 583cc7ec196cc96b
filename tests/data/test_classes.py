"""Class subsets of a dataset string (`?classes=`): the same images, relabelled in the given order."""

import ml_collections
import numpy as np
import pytest

from tests.helpers.tiny import tiny_config
from vit_jax import data, evaluators, models
from vit_jax.data.classes import class_indices, parse_dataset


def _all(dataset, split="test"):
    c = tiny_config(dataset=dataset, eval_batch_size=64)
    images, labels = [], []
    for b in data.eval_iterator(c, split):
        images.append(b["image"][b["mask"]])
        labels.append(b["label"][b["mask"]])
    return np.concatenate(images), np.concatenate(labels)


def test_a_subset_holds_the_same_images_relabelled_in_the_given_order():
    images, labels = _all("digits")
    sub_images, sub_labels = _all("digits?classes=3,1,4")
    keep = np.isin(labels, [3, 1, 4])
    np.testing.assert_array_equal(sub_images, images[keep])  # same examples, split order kept
    relabel = {3: 0, 1: 1, 4: 2}
    np.testing.assert_array_equal(sub_labels, [relabel[int(k)] for k in labels[keep]])
    info = data.get_info("digits?classes=3,1,4", "train")
    assert info.class_names == ("3", "1", "4") and info.num_classes == 3
    train_labels = _all("digits", "train")[1]
    assert info.num_examples == int(np.isin(train_labels, [3, 1, 4]).sum())


def test_class_specs_and_their_errors():
    names = ("airplane", "automobile", "bird", "cat", "deer", "dog")
    assert class_indices("0-2,5", names, "x") == [0, 1, 2, 5]
    assert class_indices("dog,cat", names, "x") == [5, 3]
    assert parse_dataset("folder:/a/b.tar.gz?classes=0-4") == ("folder:/a/b.tar.gz", "0-4")
    assert parse_dataset("digits") == ("digits", "")
    for spec, match in [("0-9", "distinct indices"), ("1,1", "distinct"), ("zebra", "class name")]:
        with pytest.raises(data.DataError, match=match):
            class_indices(spec, names, "x")
    with pytest.raises(data.DataError, match="only classes=SPEC"):
        data.get_info("digits?class=1", "test")
    with pytest.raises(data.DataError, match="not tfds"):
        data.get_info("tfds:mnist?classes=0-4", "test", "/nonexistent")


def test_fewshot_on_classes_the_model_never_trained_on():
    """Train classes 0-4, measure few-shot on 5-9: the evaluator reads the other subset."""
    c = tiny_config(dataset="digits?classes=0-4", eval_batch_size=64)
    c.evals = ml_collections.ConfigDict(
        dict(unseen=dict(type="fewshot", dataset="digits?classes=5-9", shots=(1, 5), seeds=1))
    )
    (ev,) = evaluators.from_config(c)
    ev.check(5)
    model = models.from_config(c.model, 5)
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"]
    m = ev.run(evaluators.Context(model, put=lambda b: b), {"params": params})
    assert m["count"] == data.get_info("digits?classes=5-9", "test").num_examples == 180
    assert 0.2 < m["5shot"] <= 1.0  # 5 classes: chance is 0.2
