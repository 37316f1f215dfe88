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
#: Enumeration: which frames render first (``RenderJob(order=...)``): sequential or preview.
ORDER = "cc_order"
#: Enumeration: what the node's output shows for a frame not on disk (see MISSING_FRAMES_MODES).
MISSING_FRAMES = "cc_missing_frames"
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
    ORDER,
    MISSING_FRAMES,
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
#: Tile colours (0xRRGGBBAA). The gizmo's own colour (its ``tile_color`` in the .gizmo file; a
#: test keeps them equal) is what the node goes back to after a render: 0 would be Nuke's
#: default node colour, not the gizmo's.
COLOR_GIZMO = 0x5A4A8CFF
COLOR_ERROR = 0xB0302CFF
COLOR_RUNNING = 0x3A7BBFFF
#: Colours the host sets while or after rendering; any other colour is the user's own choice.
HOST_COLORS = (COLOR_ERROR, COLOR_RUNNING)

AUTO = "Auto"
MISSING_SUFFIX = " (missing)"
MODES = ("frame", "batch")
#: ``cc_existing`` items (as in the .gizmo's ``M {...}``) -> ``RenderJob(existing=...)``. The first
#: is the default: rendering the node again overwrites its frames.
EXISTING_OVERWRITE = "overwrite"
EXISTING_RESUME = "skip existing (resume)"
EXISTING_MODES = {EXISTING_OVERWRITE: "overwrite", EXISTING_RESUME: "resume"}
#: ``cc_missing_frames`` items (as in the .gizmo's ``M {...}``), which are also the internal
#: Read's ``on_error`` items. The first is the default: a frame that is not on disk fails the
#: render downstream (a farm must not silently write black). While the node's own job runs, an
#: ``error`` choice reads as ``black`` so the viewer shows the frames as they land.
MISSING_ERROR = "error"
MISSING_BLACK = "black"
MISSING_NEAREST = "nearest frame"
MISSING_FRAMES_MODES = (MISSING_ERROR, MISSING_BLACK, MISSING_NEAREST)
#: ``cc_order`` items (as in the .gizmo's ``M {...}``); must match ``core.frames.FRAME_ORDERS``.
ORDERS = ("sequential", "preview")
#: Must match ``comfy_cluster.core.balance.STRATEGIES`` (checked by a test).
STRATEGIES = ("fastest", "least_loaded", "round_robin", "priority")
