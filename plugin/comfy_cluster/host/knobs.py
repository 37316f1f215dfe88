"""Knob names of the ComfyClusterRender gizmo, shared by the host code and the ``.gizmo`` file.

``tests/test_host_knobs.py`` parses ``gizmos/ComfyClusterRender.gizmo`` and fails if any name
here is missing there, so renaming a knob in one place only is caught. Plain constants: any
thread may read them (they never touch Nuke).
"""

from __future__ import annotations

#: Node class of the gizmo (= the .gizmo file name on the plugin path).
GIZMO_CLASS = "ComfyClusterRender"
#: Nodes-menu entry that creates it.
MENU_NAME = "ComfyUI Cluster"
MENU_ITEM = GIZMO_CLASS
MENU_PATH = f"{MENU_NAME}/{MENU_ITEM}"
ICON = "comfy_cluster.png"

TAB = "cc_tab"
WORKFLOW = "cc_workflow"
FRAMES = "cc_frames"
OUTPUT = "cc_output"
MODE = "cc_mode"
CHUNK_SIZE = "cc_chunk_size"
STRATEGY = "cc_strategy"
#: Enumeration: what a render does with output frames already on disk (see EXISTING_MODES).
EXISTING = "cc_existing"
SERVER = "cc_server"
#: Invisible String knob holding the user's server choice: the enumeration's items come back from
#: the .gizmo file on load, so the choice itself must live in a knob whose value always persists.
SERVER_CHOICE = "cc_server_choice"
RENDER = "cc_render"
CANCEL = "cc_cancel"
PROGRESS = "cc_progress"
STATUS = "cc_status"
#: Invisible Int knobs: the resolved frame range the internal Read follows by expression.
FIRST = "cc_first"
LAST = "cc_last"

#: Every user knob the gizmo declares.
ALL_KNOBS = (
    TAB,
    WORKFLOW,
    FRAMES,
    OUTPUT,
    MODE,
    CHUNK_SIZE,
    STRATEGY,
    EXISTING,
    SERVER,
    SERVER_CHOICE,
    RENDER,
    CANCEL,
    PROGRESS,
    STATUS,
    FIRST,
    LAST,
)

#: Names of the nodes inside the gizmo.
INTERNAL_READ = "cc_read"

#: Built-in knob used to colour the node on error.
TILE_COLOR = "tile_color"
#: Tile colours (0xRRGGBBAA); 0 means "the class default".
COLOR_DEFAULT = 0
COLOR_ERROR = 0xB0302CFF
COLOR_RUNNING = 0x3A7BBFFF

AUTO = "Auto"
MISSING_SUFFIX = " (missing)"
MODES = ("frame", "batch")
#: ``cc_existing`` items (as in the .gizmo's ``M {...}``) -> ``RenderJob(existing=...)``. The first
#: is the default: rendering the node again overwrites its frames.
EXISTING_OVERWRITE = "overwrite"
EXISTING_RESUME = "skip existing (resume)"
EXISTING_MODES = {EXISTING_OVERWRITE: "overwrite", EXISTING_RESUME: "resume"}
#: Must match ``comfy_cluster.core.balance.STRATEGIES`` (checked by a test).
STRATEGIES = ("fastest", "least_loaded", "round_robin", "priority")
