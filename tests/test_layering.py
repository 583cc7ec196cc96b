"""The package's architecture, checked: the one-way import rule, where process-wide state is set,
that the model never looks at the backend, and that no module grows past a screenful or so.

The rule (README, Layout): each package of vit_jax imports only the packages before it in
`ORDER`; the command lines (the top-level modules and scripts/) may import everything, and nothing
imports them.
"""

import ast
import os

import pytest

from tests.helpers.paths import ROOT

PACKAGE = os.path.join(ROOT, "vit_jax")
ORDER = (
    "common", "kernels", "models", "weights", "data", "evaluators", "config", "train", "tools",
)  # fmt: skip
# Functions that change the whole process; only the command lines (and their definitions in
# common/) may call them.
PROCESS_SETTERS = {
    "keep_freed_memory", "split_cpu", "split_for_config", "init_distributed", "initialize",
    "mallopt", "prepare_process", "quiet_process",
}  # fmt: skip
MAX_LINES = 400


def _modules():
    """(package or None for a top-level module, path relative to vit_jax/) of every module."""
    for folder, _, names in os.walk(PACKAGE):
        for name in sorted(names):
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), PACKAGE)
                parts = rel.split(os.sep)
                yield (parts[0] if len(parts) > 1 else None), rel


def _tree(rel):
    with open(os.path.join(PACKAGE, rel)) as f:
        return ast.parse(f.read(), rel)


def _imported(tree):
    """Every vit_jax module an import statement names (function-level imports included)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name == "vit_jax" or name.startswith("vit_jax."):
                yield node.lineno, name


def _target(name: str) -> str:
    """The package (or top-level module) an imported name belongs to."""
    parts = name.split(".")
    if len(parts) == 1:
        return "models"  # `import vit_jax` gives create_model from vit_jax.models
    return parts[1]


LIBRARY = [(pkg, rel) for pkg, rel in _modules() if pkg is not None]


@pytest.mark.parametrize("pkg,rel", LIBRARY, ids=[rel for _, rel in LIBRARY])
def test_packages_import_only_the_packages_before_them(pkg, rel):
    assert pkg in ORDER, f"vit_jax/{pkg}/ is not in the layering order {ORDER}"
    allowed = set(ORDER[: ORDER.index(pkg) + 1])
    bad = [
        f"line {line}: {name}"
        for line, name in _imported(_tree(rel))
        if _target(name) not in allowed
    ]
    assert not bad, f"vit_jax/{rel} ({pkg}) may import only {sorted(allowed)}: {bad}"


@pytest.mark.parametrize("pkg,rel", LIBRARY, ids=[rel for _, rel in LIBRARY])
def test_only_command_lines_set_process_wide_state(pkg, rel):
    if pkg == "common":  # where the setters are defined, each one on its own
        return
    calls = [
        f"line {node.lineno}: {getattr(node.func, 'attr', getattr(node.func, 'id', '?'))}"
        for node in ast.walk(_tree(rel))
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", None)) in PROCESS_SETTERS
    ]
    assert not calls, f"vit_jax/{rel} sets process-wide state (leave it to the CLIs): {calls}"


def test_the_model_never_looks_at_the_backend():
    found = []
    for pkg, rel in _modules():
        if pkg == "models":
            with open(os.path.join(PACKAGE, rel)) as f:
                found += [f"{rel}:{i}" for i, line in enumerate(f, 1) if "default_backend" in line]
    assert not found, f"the models choose by backend: {found}; use vit_jax.kernels.resolve"


@pytest.mark.parametrize("rel", [rel for _, rel in _modules()])
def test_no_module_is_over_400_lines(rel):
    with open(os.path.join(PACKAGE, rel)) as f:
        lines = sum(1 for _ in f)
    assert lines <= MAX_LINES, f"vit_jax/{rel} has {lines} lines; split it by responsibility"


def test_the_rule_catches_a_violation(tmp_path):
    """The checks above would fail on a model that imports the trainer or picks by backend."""
    tree = ast.parse("import jax\nfrom vit_jax.train import loop\nimport vit_jax.data\n")
    assert [_target(n) for _, n in _imported(tree)] == ["train", "data"]
    allowed = set(ORDER[: ORDER.index("models") + 1])
    assert {"train", "data"}.isdisjoint(allowed)
    call = ast.parse("host_memory.keep_freed_memory()").body[0].value
    assert call.func.attr in PROCESS_SETTERS


def test_every_package_is_documented_in_the_readme():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert " → ".join(ORDER) in readme  # the rule, as the README states it
    for pkg in ORDER:
        assert f"\n  {pkg}/ " in readme, pkg  # a line of the Layout drawing
