"""Find and import the test suite of a transformers source tree whose version is the installed transformers'.

transformers does not ship its test mixins in the wheel: they live in the repository's ``tests/`` folder (a
git checkout) and, in part, in the source distribution on PyPI. ``TRANSFORMERS_TESTS_DIR`` names the root of
such a tree (the folder holding ``tests/`` and ``src/transformers/__init__.py``). Mixins written for another
release test another API, so a tree whose version differs from the installed transformers is not used.

Two kinds of tree work:

* ``checkout``: a git checkout of the release tag (``tests/causal_lm_tester.py`` and
  ``tests/generation/test_utils.py`` present): every common test runs.
* ``sdist``: the extracted ``transformers-X.Y.Z.tar.gz`` from PyPI. It has ``tests/test_modeling_common.py``
  but not the two modules it imports its base mixins from (``tests/exporters/test_export.py``,
  ``tests/generation/test_utils.py``), nor ``causal_lm_tester.py``. Those two modules are registered as
  empty mixins, so ModelTesterMixin's own tests run and the generation and export tests are left out.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import transformers

ENV_VAR = "TRANSFORMERS_TESTS_DIR"
# Set (to anything) where the tests must run, as in tests/upstream/run.sh: a missing or mismatched tree is then a
# collection error naming the problem instead of a skip that would let the run pass without testing anything.
REQUIRED_ENV_VAR = "TRANSFORMERS_TESTS_REQUIRED"
# transformers' test files import each other as `tests.<module>` (relative imports, and absolute ones in the
# pipeline mixin), so the tree's tests/ folder is imported under that package name.
PACKAGE = "tests"
# Modules test_modeling_common.py imports a base mixin from, which the sdist does not contain.
MIXINS_MISSING_FROM_SDIST = {
    "exporters.test_export": "ExportTesterMixin",
    "generation.test_utils": "GenerationTesterMixin",
}


@dataclass(frozen=True)
class TransformersTree:
    """A transformers source tree usable with the installed transformers."""

    root: Path
    version: str
    kind: str  # "checkout" (every common test) or "sdist" (ModelTesterMixin only)

    @property
    def tests(self) -> Path:
        return self.root / "tests"


def tree_version(root: Path) -> str | None:
    """The ``__version__`` written in the tree's ``src/transformers/__init__.py``, or None without one."""
    init = root / "src" / "transformers" / "__init__.py"
    if not init.is_file():
        return None
    found = re.search(r'^__version__ = "([^"]+)"', init.read_text(encoding="utf-8"), re.MULTILINE)
    return found.group(1) if found else None


def locate_tree() -> TransformersTree | str:
    """The tree ``TRANSFORMERS_TESTS_DIR`` names, or the reason it cannot be used (a sentence saying the fix)."""
    setting = os.environ.get(ENV_VAR)
    how = "see tests/upstream/README.md for how to get one and tests/upstream/run.sh to run these tests"
    if not setting:
        return f"{ENV_VAR} is not set: point it at a transformers {transformers.__version__} source tree ({how})."
    root = Path(setting).expanduser().resolve()
    if not (root / "tests" / "test_modeling_common.py").is_file():
        return f"{ENV_VAR}={setting} has no tests/test_modeling_common.py: it must be a transformers tree ({how})."
    version = tree_version(root)
    if version is None:
        return (
            f"{ENV_VAR}={setting} has no src/transformers/__init__.py with a __version__, so its tests cannot be "
            f"matched to the installed transformers {transformers.__version__} ({how})."
        )
    if version != transformers.__version__:
        return (
            f"{ENV_VAR}={setting} holds transformers {version}'s tests but transformers {transformers.__version__} "
            f"is installed: use the tree of the installed release (git tag v{transformers.__version__}) ({how})."
        )
    if importlib.util.find_spec("parameterized") is None:
        return (
            "transformers' tests import `parameterized`, which is not installed: pip install parameterized."
        )
    checkout = all(
        (root / "tests" / name).is_file() for name in ("causal_lm_tester.py", "generation/test_utils.py")
    )
    return TransformersTree(root, version, "checkout" if checkout else "sdist")


def require_tree() -> TransformersTree:
    """The usable tree, imported as the ``tests`` package; skips the calling test module when there is none
    (fails it when ``TRANSFORMERS_TESTS_REQUIRED`` is set)."""
    tree = locate_tree()
    if isinstance(tree, TransformersTree) and not _package_name_free(tree):
        tree = (
            f"A module named {PACKAGE!r} ({sys.modules[PACKAGE]!r}) is already imported, and transformers' tests "
            "need that name: run tests/upstream on its own (tests/upstream/run.sh)."
        )
    if isinstance(tree, str):
        if os.environ.get(REQUIRED_ENV_VAR):
            pytest.fail(f"{tree} ({REQUIRED_ENV_VAR} is set, so this is an error.)", pytrace=False)
        pytest.skip(tree, allow_module_level=True)
    _register_package(PACKAGE, tree.tests)
    if tree.kind == "sdist":
        for module, mixin in MIXINS_MISSING_FROM_SDIST.items():
            if not (tree.tests / f"{module.replace('.', '/')}.py").is_file():
                _register_empty_mixin(f"{PACKAGE}.{module}", mixin, tree.tests)
    return tree


def import_upstream(module: str) -> types.ModuleType:
    """A module of the tree's tests/ folder, e.g. ``import_upstream("test_modeling_common")``."""
    return importlib.import_module(f"{PACKAGE}.{module}")


def _package_name_free(tree: TransformersTree) -> bool:
    """Whether ``tests`` can name the tree's tests/ folder: unused, or already this tree's (imported before)."""
    loaded = sys.modules.get(PACKAGE)
    return loaded is None or list(getattr(loaded, "__path__", [])) == [str(tree.tests)]


def _register_package(name: str, path: Path) -> None:
    """Make ``name`` a package whose modules are the ``.py`` files under ``path`` (which needs no __init__.py)."""
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(path)]
        sys.modules[name] = package


def _register_empty_mixin(module_name: str, mixin: str, tests: Path) -> None:
    """Stand in for a module the sdist lacks with one defining ``mixin`` as a class without tests.

    Only import-time: ModelTesterMixin derives from ExportTesterMixin and test_modeling_common re-exports
    GenerationTesterMixin; no test of those mixins runs in this mode.
    """
    parent = module_name.rpartition(".")[0]
    if parent != PACKAGE:
        _register_package(parent, tests / parent.partition(".")[2].replace(".", "/"))
    module = types.ModuleType(module_name)
    module.__doc__ = f"Not in the transformers sdist: {mixin} without its tests."
    setattr(module, mixin, type(mixin, (), {"__module__": module_name}))
    sys.modules[module_name] = module
