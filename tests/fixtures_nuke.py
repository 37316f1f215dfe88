"""The ``fake_nuke`` fixture: the fake ``nuke``/``nukescripts`` packages from tests/fakes.

``tests/fakes`` goes to the front of sys.path when this plugin loads (before test modules import
plugin code), so ``import nuke`` anywhere in the test session gets the fake. The fixture resets
the session before and after each test and fails the test if queued calls or callbacks raised
exceptions that the test did not take with ``nuke._fake.take_errors()``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

FAKES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakes")
TESTDATA = os.path.join(FAKES, "testdata")
if sys.path[:1] != [FAKES]:
    if FAKES in sys.path:
        sys.path.remove(FAKES)
    sys.path.insert(0, FAKES)


@pytest.fixture
def fake_nuke() -> Iterator[Any]:
    """The fake ``nuke`` module, freshly reset; this thread is Nuke's main thread."""
    import nuke
    import nukescripts  # noqa: F401  (so PyCustom_Knob expressions can import it)

    nuke._fake.reset()
    try:
        yield nuke
        leftover = nuke._fake.take_errors()
        if leftover:
            pytest.fail(f"unhandled exceptions in queued calls or Nuke callbacks: {leftover!r}")
    finally:
        nuke._fake.reset()


@pytest.fixture
def fake_gizmo_dir() -> str:
    """The folder holding the fake's example gizmo (CCFakeRender.gizmo)."""
    return TESTDATA
