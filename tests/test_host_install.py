"""install_host/uninstall_host are exact inverses; onCreate is idempotent across load and paste."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfy_cluster.core.cluster import ClusterService
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.host import knobs as K
from comfy_cluster.host.install import current_session, install_host, node_created, uninstall_host

ROOT = Path(__file__).resolve().parent.parent


def _servers(*names: str) -> list[ServerConfig]:
    return [ServerConfig(name=n, host="127.0.0.1", port=9000 + i) for i, n in enumerate(names)]


def _menu_tree(menu: Any) -> list[Any]:
    tree = []
    for item in menu.items():
        children = _menu_tree(item) if hasattr(item, "items") else None
        tree.append((item.name(), children))
    return tree


def _state(nuke: Any) -> tuple[Any, Any]:
    """Registered callbacks (empty per-class lists dropped, as in Nuke's own registry after a
    remove) and the Nodes menu tree."""
    callbacks = {
        kind: {cls: list(entries) for cls, entries in per_class.items() if entries}
        for kind, per_class in nuke._fake.session().callbacks.items()
    }
    callbacks = {kind: per_class for kind, per_class in callbacks.items() if per_class}
    menus = _menu_tree(nuke.menu("Nodes")) if nuke.GUI else None
    return callbacks, menus


@pytest.fixture
def nk(fake_nuke: Any) -> Iterator[Any]:
    fake_nuke.pluginAddPath(str(ROOT / "gizmos"))
    uninstall_host(fake_nuke)
    yield fake_nuke
    uninstall_host(fake_nuke)


@pytest.mark.parametrize("gui", [True, False])
def test_install_then_uninstall_restores_menus_and_callbacks(nk: Any, gui: bool) -> None:
    nk._fake.set_gui(gui)
    unrelated = lambda: None  # noqa: E731 - someone else's callback must survive
    nk.addOnCreate(unrelated, nodeClass=K.GIZMO_CLASS)
    if gui:
        nk.menu("Nodes").addMenu("Other").addCommand("Thing", unrelated)
    before = _state(nk)
    session = install_host(servers=lambda: [], nuke=nk)
    assert install_host(nuke=nk) is session, "idempotent"
    assert _state(nk) != before
    if gui:
        assert nk.menu("Nodes").findItem(K.MENU_PATH) is not None
    uninstall_host(nk)
    assert _state(nk) == before
    assert current_session(nk) is None
    uninstall_host(nk)  # idempotent
    assert _state(nk) == before


def test_uninstall_keeps_a_submenu_it_did_not_create(nk: Any) -> None:
    nk.menu("Nodes").addMenu(K.MENU_NAME).addCommand("Theirs", lambda: None)
    before = _state(nk)
    install_host(servers=lambda: [], nuke=nk)
    uninstall_host(nk)
    assert _state(nk) == before


def test_oncreate_twice_is_harmless(nk: Any) -> None:
    install_host(servers=lambda: _servers("a", "b"), nuke=nk)
    node = nk.createNode(K.GIZMO_CLASS)
    knobs = list(node.knobs())
    node_created(node)
    current_session(nk).controller.on_create(node)
    assert list(node.knobs()) == knobs
    assert node[K.SERVER].values() == ["Auto", "a", "b"]


def test_terminal_session_installs_itself_from_the_gizmo(nk: Any) -> None:
    nk._fake.set_gui(False)
    assert current_session(nk) is None
    node = nk.createNode(K.GIZMO_CLASS)  # the gizmo's onCreate knob installs the host
    session = current_session(nk)
    assert session is not None
    assert session.menu_items == []
    assert node[K.SERVER].value() == K.AUTO


def test_script_load_keeps_choice_and_does_not_duplicate_knobs(nk: Any, tmp_path: Path) -> None:
    servers = _servers("render1", "render2", "render3")
    install_host(servers=lambda: servers, nuke=nk)
    node = nk.createNode(K.GIZMO_CLASS)
    nk._fake.user_sets(node[K.SERVER], "render3")
    assert node[K.SERVER_CHOICE].value() == "render3"
    nk._fake.user_sets(node[K.EXISTING], K.EXISTING_RESUME)
    name = node.name()
    names = [k.name() for k in node.allKnobs()]
    script = tmp_path / "shot.nk"
    nk.scriptSaveAs(str(script))

    nk.scriptOpen(str(script))
    loaded = nk.toNode(name)
    assert [k.name() for k in loaded.allKnobs()] == names
    assert loaded[K.SERVER].value() == "render3"
    assert loaded[K.EXISTING].value() == K.EXISTING_RESUME  # an item with spaces round-trips
    assert loaded[K.SERVER].values() == ["Auto", "render1", "render2", "render3"]

    # The server list changes: refresh keeps the choice.
    servers[:] = _servers("render0", "render3")
    nk._fake.open_panel(loaded)
    assert loaded[K.SERVER].values() == ["Auto", "render0", "render3"]
    assert loaded[K.SERVER].value() == "render3"


def test_missing_server_is_shown_not_replaced(nk: Any, tmp_path: Path) -> None:
    servers = _servers("render1", "render3")
    install_host(servers=lambda: servers, nuke=nk)
    node = nk.createNode(K.GIZMO_CLASS)
    nk._fake.user_sets(node[K.SERVER], "render3")
    name = node.name()
    script = tmp_path / "shot.nk"
    nk.scriptSaveAs(str(script))
    servers[:] = _servers("render1", "render2")

    nk.scriptOpen(str(script))
    loaded = nk.toNode(name)
    assert loaded[K.SERVER].value() == "render3 (missing)"
    assert loaded[K.SERVER].values() == ["Auto", "render1", "render2", "render3 (missing)"]
    assert loaded[K.SERVER_CHOICE].value() == "render3"
    # Rendering refuses instead of using another server.
    loaded[K.WORKFLOW].setValue(str(ROOT / "tests" / "fixtures" / "workflows" / "invert.json"))
    loaded[K.OUTPUT].setValue(str(tmp_path / "o.####.png"))
    loaded.setInput(0, nk.nodes.Read(file=str(tmp_path / "p.####.png")))
    nk._fake.press(loaded[K.RENDER])
    assert "render3" in loaded[K.STATUS].value() and "missing" in loaded[K.STATUS].value()
    assert loaded[K.TILE_COLOR].value() == K.COLOR_ERROR
    # Picking the missing entry again keeps it; picking a live server replaces it.
    nk._fake.user_sets(loaded[K.SERVER], "render3 (missing)")
    assert loaded[K.SERVER_CHOICE].value() == "render3"
    nk._fake.user_sets(loaded[K.SERVER], "render2")
    assert loaded[K.SERVER_CHOICE].value() == "render2"


def test_paste_runs_oncreate_again_idempotently(nk: Any) -> None:
    install_host(servers=lambda: _servers("a"), nuke=nk)
    node = nk.createNode(K.GIZMO_CLASS)
    nk._fake.user_sets(node[K.SERVER], "a")
    node.selectOnly()
    nk.nodeCopy("%clipboard%")
    pasted = nk.nodePaste("%clipboard%")
    assert pasted is not node
    assert pasted[K.SERVER].value() == "a"
    assert [k.name() for k in pasted.allKnobs()] == [k.name() for k in node.allKnobs()]


def test_frames_knob_drives_the_internal_read(nk: Any) -> None:
    install_host(servers=lambda: [], nuke=nk)
    node = nk.createNode(K.GIZMO_CLASS)
    node[K.OUTPUT].setValue("/renders/x.####.png")
    nk._fake.user_sets(node[K.FRAMES], "1001-1010")
    read = node.node(K.INTERNAL_READ)
    assert read["first"].value() == 1001
    assert read["last"].value() == 1010
    assert read["file"].evaluate() == "/renders/x.####.png"


def test_without_a_service_the_node_gets_the_fixed_list_unmonitored(nk: Any) -> None:
    session = install_host(servers=lambda: _servers("a", "b"), nuke=nk)
    assert session.cluster() is None  # nothing for the panel to share
    servers, cluster = session.controller.configured(render=True)
    assert [s.name for s in servers] == ["a", "b"]
    assert cluster.monitor is None  # no health checks, and the Job column goes nowhere
    cluster.report_job("a", "Render1 chunk 1 (1)", job="j")
    cluster.clear_job("j")


def test_after_shutdown_a_render_reads_the_configuration_unmonitored(
    nk: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMFY_CLUSTER_CONFIG", str(tmp_path / "user.json"))
    monkeypatch.setenv(
        "NUKE_COMFYUI_SERVERS", json.dumps([{"name": "late", "host": "127.0.0.1", "port": 9}])
    )
    built: list[ClusterService] = []

    def service() -> ClusterService:
        built.append(ClusterService(start=False))
        return built[-1]

    session = install_host(service_factory=service, nuke=nk)
    assert session.controller.configured()[1] is session.cluster(start=False)
    session.shutdown()  # Nuke quits (aboutToQuit, atexit) while the script can still render
    servers, cluster = session.controller.configured(render=True)
    assert [s.name for s in servers] == ["late"]
    assert cluster.monitor is None and session.cluster() is None
    assert len(built) == 1 and built[0].closed


def test_install_takes_servers_or_a_service_factory_not_both(nk: Any) -> None:
    with pytest.raises(TypeError, match="not both"):
        install_host(servers=lambda: [], service_factory=ClusterService, nuke=nk)
    assert current_session(nk) is None
