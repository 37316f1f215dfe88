"""Issue 12: the farm, end to end.

A .nk with a ComfyClusterRender node (top level, and inside a user Group) and a Write downstream
is saved, then loaded in a fresh interpreter playing ``nuke -t`` (the fake ``nuke``, terminal
mode, nothing but the plugin path set up, the servers from ``NUKE_COMFYUI_SERVERS`` as on a render
node). The farm script presses the node's Render button, which blocks until the job ends on a
simulated ComfyUI on 127.0.0.1, and exits 0 only if the status says Done. Then the downstream Write
is rendered with a frame missing: by default it fails loudly (non-zero exit, the missing file
named); with Missing frames set to black by the artist it writes a black frame and exits 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from fixtures_nuke import FRAMES, GIZMOS, ROOT, WORKFLOW, image_colours, plate_colour, write_plate

from comfy_cluster.host import knobs as K
from comfy_cluster.host.install import uninstall_host

RENDER_SCRIPT = textwrap.dedent(
    """
    import sys
    import nuke

    nuke._fake.set_gui(False)  # what `nuke -t` is
    nuke.pluginAddPath(sys.argv[1])  # init.py's job on a render node
    nuke.scriptOpen(sys.argv[2])
    node = nuke.toNode(sys.argv[3])
    node["cc_render"].execute()  # returns when the job is done, failed or cancelled
    status = node["cc_status"].value()
    print("STATUS", status)
    sys.exit(0 if status.startswith("Done") else 1)
    """
)

DOWNSTREAM_SCRIPT = textwrap.dedent(
    """
    import sys
    import nuke

    nuke._fake.set_gui(False)
    nuke.pluginAddPath(sys.argv[1])
    nuke.scriptOpen(sys.argv[2])
    nuke.execute("Comp", 1, 6)  # an uncaught render error exits non-zero, like nuke -t
    print("SUBSTITUTED", nuke._fake.substituted())
    """
)


def _run(script: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _save_shot(nuke: Any, tmp: Path, group: Optional[str], missing: str) -> tuple[Path, str]:
    """The artist's script: plate -> [Group ->] ComfyClusterRender -> Write "Comp"."""
    nuke.pluginAddPath(GIZMOS)
    read = nuke.nodes.Read(file=write_plate(tmp / "plate"), name="Plate")
    read["last"].setValue(FRAMES[-1])
    if group:
        holder = nuke.nodes.Group(name=group)
        with holder:
            entry = nuke.nodes.Input()
            node = nuke.nodes.ComfyClusterRender()
            node.setInput(0, entry)
            nuke.nodes.Output().setInput(0, node)
        holder.setInput(0, read)
        last: Any = holder
    else:
        node = nuke.nodes.ComfyClusterRender()
        node.setInput(0, read)
        last = node
    node[K.WORKFLOW].setValue(WORKFLOW)
    node[K.OUTPUT].setValue(str(tmp / "comfy" / "inv.####.png"))
    node[K.FRAMES].setValue(f"{FRAMES[0]}-{FRAMES[-1]}")
    if missing != K.MISSING_ERROR:  # the default: the artist leaves it alone
        nuke._fake.user_sets(node[K.MISSING_FRAMES], missing)
    comp = nuke.nodes.Write(name="Comp", file=str(tmp / "comp" / "comp.####.png"))
    comp["create_directories"].setValue(True)
    comp.setInput(0, last)
    script = tmp / "shot.nk"
    nuke.scriptSaveAs(str(script))
    return script, node.fullName()


@pytest.fixture
def farm(
    fake_nuke: Any, tmp_path: Path, sim_factory: Callable[..., Any]
) -> Callable[..., tuple[Path, str, dict[str, str]]]:
    def make(group: Optional[str], missing: str = K.MISSING_ERROR) -> Any:
        sim = sim_factory(name="farm1")
        uninstall_host(fake_nuke)
        script, name = _save_shot(fake_nuke, tmp_path, group, missing)
        uninstall_host(fake_nuke)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [os.path.join(ROOT, "tests", "fakes"), os.path.join(ROOT, "plugin")]
        )
        env["NUKE_COMFYUI_SERVERS"] = json.dumps(
            [{"name": "farm1", "ip": "127.0.0.1", "port": sim.port}]
        )
        env["COMFY_CLUSTER_CONFIG"] = str(tmp_path / "no-user-file.json")
        env.pop("QT_API", None)
        return script, name, env

    return make


@pytest.mark.parametrize("group", [None, "Shot"])
def test_farm_render_then_downstream_fails_loudly_on_a_missing_frame(
    farm: Callable[..., Any], tmp_path: Path, group: Optional[str]
) -> None:
    script, name, env = farm(group)
    done = _run(RENDER_SCRIPT, [GIZMOS, str(script), name], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"STATUS Done: {len(FRAMES)} frames" in done.stdout
    assert f"comfy_cluster: {name}: Done" in done.stdout
    for frame in FRAMES:
        (got,) = image_colours(tmp_path / "comfy" / f"inv.{frame:04d}.png")
        expected = [255 - c for c in plate_colour(frame)]
        assert all(abs(a - b) <= 1 for a, b in zip(got, expected)), (frame, got)

    (tmp_path / "comfy" / "inv.0003.png").unlink()  # ComfyUI never delivered frame 3
    comp = _run(DOWNSTREAM_SCRIPT, [GIZMOS, str(script)], env)
    assert comp.returncode != 0, comp.stdout
    assert "inv.0003.png" in comp.stderr and "No such file" in comp.stderr
    assert not (tmp_path / "comp" / "comp.0003.png").exists()


def test_farm_downstream_with_black_chosen_by_the_artist(
    farm: Callable[..., Any], tmp_path: Path
) -> None:
    script, name, env = farm(None, K.MISSING_BLACK)
    assert _run(RENDER_SCRIPT, [GIZMOS, str(script), name], env).returncode == 0
    (tmp_path / "comfy" / "inv.0003.png").unlink()
    comp = _run(DOWNSTREAM_SCRIPT, [GIZMOS, str(script)], env)
    assert comp.returncode == 0, comp.stderr
    assert f"('{name}.cc_read', 3, 'black')" in comp.stdout
    assert image_colours(tmp_path / "comp" / "comp.0003.png") == [(0, 0, 0)]
