"""The ``fake_nuke`` fixture: the fake ``nuke``/``nukescripts`` packages from tests/fakes.

``tests/fakes`` goes to the front of sys.path when this plugin loads (before test modules import
plugin code), so ``import nuke`` anywhere in the test session gets the fake. The fixture resets
the session before and after each test and fails the test if queued calls or callbacks raised
exceptions that the test did not take with ``nuke._fake.take_errors()``.

``rig_factory`` builds the end-to-end set-up the host tests share (:class:`Rig`): the real
ComfyClusterRender gizmo, a plate Read, sims on 127.0.0.1, and the host installed over them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any, Callable, Optional

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


# -- the render rig: the gizmo in the fake Nuke, rendering on simulated servers -----------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIZMOS = os.path.join(ROOT, "gizmos")
WORKFLOW = os.path.join(ROOT, "tests", "fixtures", "workflows", "invert.json")
FRAMES = range(1, 7)
TIMEOUT = 20.0


def plate_colour(frame: int) -> tuple[int, int, int]:
    """The flat colour of plate frame ``frame`` (each frame differs)."""
    return (frame * 30 % 256, 200 - frame * 10, 17 * frame % 256)


def image_colours(path: Any) -> list[tuple[int, ...]]:
    from PIL import Image

    with Image.open(path) as img:
        return [colour for _, colour in img.convert("RGB").getcolors()]


def write_plate(folder: Any, frames: Any = FRAMES) -> str:
    """Small flat-colour PNGs ``plate.####.png`` in ``folder``; returns the pattern."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for frame in frames:
        Image.new("RGB", (8, 8), plate_colour(frame)).save(
            os.path.join(folder, f"plate.{frame:04d}.png")
        )
    return os.path.join(str(folder), "plate.####.png")


class Rig:
    """The session under test: fake nuke, sims, the installed host, a plate Read.

    ``create_node(group=...)`` makes a ComfyClusterRender node at the top level (through the
    Nodes menu in the GUI, ``createNode`` in a terminal) or inside a user Group, wired to the
    plate through the group's Input, with Workflow and Output set.
    """

    def __init__(self, nuke: Any, tmp_path: Any, servers: list[Any], frames: Any = FRAMES) -> None:
        from pathlib import Path

        self.nuke = nuke
        self.tmp = Path(tmp_path)
        self.servers = servers
        self.frames = frames
        self.plate = self.tmp / "plate"
        self.out = self.tmp / "out"
        self.sims: list[Any] = []
        with nuke.root():
            self.read = nuke.nodes.Read(file=write_plate(self.plate, frames))
        self.read["first"].setValue(frames[0])
        self.read["last"].setValue(frames[-1])

    def create_node(self, group: Optional[str] = None) -> Any:
        from comfy_cluster.host import knobs as K

        nuke = self.nuke
        if group is None:
            node = self._create_top()
            node.setInput(0, self.read)
        else:
            with nuke.root():
                holder = nuke.nodes.Group(name=group)
            with holder:
                entry = nuke.nodes.Input()
                node = nuke.createNode(K.GIZMO_CLASS)
                node.setInput(0, entry)
                nuke.nodes.Output().setInput(0, node)
            holder.setInput(0, self.read)
        node[K.WORKFLOW].setValue(WORKFLOW)
        node[K.OUTPUT].setValue(str(self.out / "inv.####.png"))
        return node

    def _create_top(self) -> Any:
        from comfy_cluster.host import knobs as K

        nuke = self.nuke
        if not nuke.GUI:
            with nuke.root():
                return nuke.createNode(K.GIZMO_CLASS)
        before = {n.name() for n in nuke.allNodes()}
        nuke._fake.invoke("Nodes", K.MENU_PATH)
        (name,) = {n.name() for n in nuke.allNodes()} - before
        return nuke.toNode(name)

    def status(self, node: Any) -> str:
        from comfy_cluster.host import knobs as K

        return node[K.STATUS].value()

    def wait_status(self, node: Any, prefix: str, timeout: float = TIMEOUT) -> None:
        from comfy_cluster.host import knobs as K

        name = node.fullName()

        def ended() -> bool:
            current = self.nuke.toNode(name)
            return current is not None and current[K.STATUS].value().startswith(prefix)

        self.nuke._fake.pump_until(ended, timeout)

    def assert_inverted(self, frames: Any = None) -> None:
        for frame in self.frames if frames is None else frames:
            path = self.out / f"inv.{frame:04d}.png"
            assert path.is_file(), f"frame {frame} missing"
            expected = [255 - c for c in plate_colour(frame)]
            (got,) = image_colours(path)  # one flat colour, like the plate
            # ComfyUI works in floats: allow the 8-bit round trip to be one step off.
            assert all(abs(a - b) <= 1 for a, b in zip(got, expected)), (frame, got, expected)

    def prompts_left(self) -> list[str]:
        left: list[str] = []
        for sim in self.sims:
            running, pending = sim.queue_snapshot()
            left += running + pending
        return left

    def prompt_count(self) -> int:
        return sum(len(s.prompts_seen) for s in self.sims)


@pytest.fixture
def violations(monkeypatch: pytest.MonkeyPatch, fake_nuke: Any) -> list[str]:
    """Every FakeThreadViolation raised during the test, even if something swallowed it."""
    from nuke._state import FakeThreadViolation

    seen: list[str] = []
    original = FakeThreadViolation.__init__

    def record(self: Any, *args: Any) -> None:
        seen.append(str(args[0]) if args else "")
        original(self, *args)

    monkeypatch.setattr(FakeThreadViolation, "__init__", record)
    return seen


def fast_scheduler(servers: Any, health: Any = None) -> Any:
    """The real scheduler with short failover timings (a killed server costs seconds)."""
    from comfy_cluster.core.engine.scheduler import Scheduler
    from comfy_cluster.core.retry import retry_transient

    return Scheduler(
        servers,
        health=health,
        retry=retry_transient(attempts=2, max_seconds=2.0, initial=0.05, maximum=0.2),
        stall_timeout=2.0,
        no_server_timeout=10.0,
        join_timeout=5.0,
    )


@pytest.fixture
def rig_factory(
    fake_nuke: Any, tmp_path: Any, sim_factory: Callable[..., Any], violations: list[str]
) -> Iterator[Callable[..., Rig]]:
    """``make(*sim_options, gui=True, on_set=False, frames=FRAMES, **install_options)``: sims
    (one per options dict), the host installed over them, a plate Read. ``on_set``: knobChanged
    fires for programmatic changes too (``nuke._fake.set_knob_changed``). The test fails if any
    worker touched Nuke off the main thread."""
    from comfy_cluster.core.server import ServerConfig
    from comfy_cluster.host.install import install_host, uninstall_host

    fake_nuke.pluginAddPath(GIZMOS)
    uninstall_host(fake_nuke)

    def make(
        *sim_options: dict[str, Any],
        gui: bool = True,
        on_set: bool = False,
        frames: Any = FRAMES,
        **install_options: Any,
    ) -> Rig:
        sims = [sim_factory(name=f"sim{i + 1}", **opts) for i, opts in enumerate(sim_options)]
        servers = [
            ServerConfig(name=f"sim{i + 1}", host="127.0.0.1", port=s.port)
            for i, s in enumerate(sims)
        ]
        fake_nuke._fake.set_gui(gui)
        fake_nuke._fake.set_knob_changed(on_set=on_set)
        rig = Rig(fake_nuke, tmp_path, servers, frames)
        rig.sims = sims
        options: dict[str, Any] = {
            "scheduler_factory": fast_scheduler,
            "temp_root": str(tmp_path),
            "export_batch": 2,
        }
        options.update(install_options)
        install_host(servers=lambda: rig.servers, nuke=fake_nuke, **options)
        return rig

    yield make
    uninstall_host(fake_nuke)
    assert violations == []
