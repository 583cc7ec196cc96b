"""docs/recipes.md and the recipe configs agree: every table row with a config key states, as a
Python literal, the value its config loads to; every key a recipe changes has a row; every recipe
config has a table."""

import ast
import os
import re

import ml_collections
import pytest

from tests.helpers.paths import ROOT
from vit_jax import config as config_lib
from vit_jax.common import trees

DOC = os.path.join(ROOT, "docs", "recipes.md")
# configs/<name>.py, each with a full table
RECIPES = ("imagenet_s16", "i21k_b16", "finetune", "vit_g14")
COLUMNS = ["hyperparameter", "config key", "ours", "source", "where", "note"]
MIN_ROWS = 15  # a recipe table (not a variant) lists at least this many hyperparameters
_CONFIG_REF = re.compile(r"`?configs/(\w+)\.py(?::(\w+))?`?")


def _cells(line: str):
    """The cells of a Markdown table row (pipes escaped as \\| stay in the cell)."""
    parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [p.strip().replace("\\|", "|") for p in parts]


def _tables(text: str):
    """[(heading, config name, config argument or None, [row cells])] for every table."""
    tables, heading, current = [], None, None
    for line in text.splitlines():
        if line.startswith("#"):
            heading, current = line.lstrip("#").strip(), None
        elif line.startswith("|"):
            cells = _cells(line)
            if current is None:
                ref = _CONFIG_REF.search(heading or "")
                assert ref, f"a table under {heading!r} names no configs/<name>.py in its heading"
                assert cells == COLUMNS, f"table under {heading!r} has columns {cells}"
                current = (heading, ref.group(1), ref.group(2), [])
                tables.append(current)
            elif not set("".join(cells)) <= set("-: "):  # skip the |---| separator
                assert len(cells) == len(COLUMNS), f"{heading!r}: row {line!r}"
                current[3].append(cells)
        else:
            current = None
    return tables


def _code(cell: str):
    """The text of a cell that is exactly one `code span`, else None."""
    m = re.fullmatch(r"`([^`]+)`", cell)
    return m.group(1) if m else None


def _plain(value):
    """ConfigDicts as dicts and lists as tuples, recursively, for comparison with literals."""
    if isinstance(value, (ml_collections.ConfigDict, dict)):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value


def _get(config, key: str):
    node = config
    for part in key.split("."):
        assert part in node, f"config has no key {key!r}"
        node = node[part]
    return node


def _load(name: str, arg):
    path = os.path.join(ROOT, "configs", f"{name}.py")
    return config_lib.load_config(path, *([arg] if arg else []))


TABLES = _tables(open(DOC, encoding="utf-8").read())


def test_every_recipe_config_has_a_full_table():
    full = [t for t in TABLES if not t[0].startswith("Variant")]
    assert sorted({t[1] for t in full}) == sorted(RECIPES)
    for heading, _, _, rows in full:
        assert len(rows) >= MIN_ROWS, f"{heading!r} has only {len(rows)} rows"
    for heading, _, _, rows in TABLES:
        assert rows, f"{heading!r} has no rows"


@pytest.mark.parametrize("table", TABLES, ids=lambda t: f"{t[1]}:{t[2] or ''}")
def test_table_rows_equal_the_config(table):
    heading, name, arg, rows = table
    config = _load(name, arg)
    config_lib.validate(config, num_devices=1)
    keys = []
    for cells in rows:
        row = dict(zip(COLUMNS, cells))
        assert row["hyperparameter"] and row["source"] and row["where"], f"{heading}: {cells}"
        if row["config key"] == "—":
            assert _code(row["ours"]) is None or not row["ours"], (
                f"{heading}: row {row['hyperparameter']!r} has a literal but no config key"
            )
            continue
        key = _code(row["config key"])
        assert key, f"{heading}: config key {row['config key']!r} is not one `dotted.key`"
        literal = _code(row["ours"])
        assert literal is not None, f"{heading}: {key}: 'ours' {row['ours']!r} is not a `literal`"
        expected = ast.literal_eval(literal)
        got = _plain(_get(config, key))
        assert got == _plain(expected) and type(got) is type(_plain(expected)), (
            f"{heading}: {key} is {got!r} in the config but {literal} in docs/recipes.md"
        )
        keys.append(key)
    assert len(keys) == len(set(keys)), f"{heading}: a config key has two rows"
    if heading.startswith("Variant"):
        return
    # Every key the config sets away from the defaults has a row (a row for `evals.val` covers
    # `evals.val.split`, ...), so a new setting cannot go undocumented.
    base = trees.flatten(config_lib.base_config())
    changed = [
        k for k, v in trees.flatten(config).items() if k not in base or _plain(base[k]) != _plain(v)
    ]
    missing = [k for k in changed if not any(k == r or k.startswith(r + ".") for r in keys)]
    assert not missing, f"{heading}: no row for {missing}"


def test_the_weight_decay_example_of_the_introduction():
    """The numbers of "Two forms of weight decay": per step at the peak lr·wd = 1e-7 (optax's form)
    against wd = 1e-4 (big_vision's); over imagenet_s16 the multiplier sums to about 55,700."""
    import jax.numpy as jnp  # noqa: PLC0415

    from vit_jax.train import optim  # noqa: PLC0415

    c = _load("imagenet_s16", None)
    assert (c.lr, c.weight_decay, c.weight_decay_form) == (1e-3, 1e-4, "schedule")
    assert c.lr * c.weight_decay == pytest.approx(1e-7, rel=1e-9)
    total = float(jnp.sum(optim.make_schedule(c)(jnp.arange(c.total_steps)))) / c.lr
    assert total == pytest.approx(55_700, rel=2e-3)
    assert jnp.exp(-c.weight_decay * total) == pytest.approx(0.004, abs=5e-4)
    assert jnp.exp(-c.lr * c.weight_decay * total) == pytest.approx(0.994, abs=5e-4)
