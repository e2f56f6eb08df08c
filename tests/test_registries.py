"""Every extension point has one registry, and every registered kind has a test of its own: a
kind added without one fails here. "Its own" means a test module or test function under the
package's tests whose name carries the kind (test_layouts_qr.py, test_ivf_..., ...)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from plexrec.features.reader_registry import READERS
from plexrec.models.layout_registry import LAYOUTS
from plexrec.serving.index_registry import INDEXES
from plexrec.serving.stores import ONLINE_STORES
from plexrec.training.tasks import TASKS

TESTS = Path(__file__).parent


def _names(folder: str) -> set[str]:
    """The test modules' stems and test function names under tests/<folder>."""
    out: set[str] = set()
    for path in (TESTS / folder).glob("test_*.py"):
        out.add(path.stem)
        out.update(node.name for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                   and node.name.startswith("test_"))
    return out


def _kind_of(target: str) -> str:
    """"plexrec.serving.stores.redis:RedisStore" -> "redis" (the registered module's stem)."""
    return target.partition(":")[0].rsplit(".", 1)[-1]


REGISTRIES = {
    "features": {name: name for name in READERS},
    "models": {name: name for name in LAYOUTS},
    "training": {name: name for name in TASKS},
    "serving": {**{name: name for name in INDEXES},
                **{_kind_of(target): _kind_of(target) for target in ONLINE_STORES.values()}},
}


@pytest.mark.parametrize(("folder", "kind"), [(folder, kind) for folder, kinds in
                                               REGISTRIES.items() for kind in kinds])
def test_every_registered_kind_has_a_test(folder: str, kind: str) -> None:
    names = _names(folder)
    assert any(f"_{kind}_" in f"_{name}_" for name in names), (
        f"no test under tests/{folder} names {kind!r}")
