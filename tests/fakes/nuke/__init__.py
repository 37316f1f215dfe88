# ruff: noqa: F401, E402  (this module re-exports the fake API, like nuke/__init__.py does)
"""A faithful fake of Foundry Nuke's ``nuke`` module for tests (see docs/testing-nuke.md).

Stateful, strict about the main thread, no catch-all attributes. The public names are kept
inside the ``types-nuke`` stubs by tests/test_fake_nuke_parity.py. ``nuke._fake`` holds the test
controls (reset, pump, scripted answers, records).
"""

from __future__ import annotations

GUI = True
INTERACTIVE = True
NUKE_VERSION_MAJOR = 15
NUKE_VERSION_MINOR = 1
NUKE_VERSION_RELEASE = 1
NUKE_VERSION_STRING = "15.1v1"
NUKE_VERSION_PHASE = ""
NUKE_VERSION_PHASENUMBER = 0
NUKE_VERSION_DATE = ""
EXE_PATH = "/usr/local/Nuke15.1v1/Nuke15.1"
PLUGIN_EXT = "so"
NUM_CPUS = 8
rawArgs: list = []
untitled = "Untitled"
# Nuke's GlobalsEnvironment is a mapping; a dict has the same surface.
env: dict = {
    "gui": True,
    "NukeVersionMajor": 15,
    "NukeVersionMinor": 1,
    "NukeVersionRelease": 1,
    "NukeVersionString": "15.1v1",
    "ExecutablePath": EXE_PATH,
    "PluginExtension": PLUGIN_EXT,
    "numCPUs": NUM_CPUS,
    "threads": NUM_CPUS,
    "64bit": True,
    "nukex": False,
    "studio": False,
    "hiero": False,
    "assist": False,
    "ple": False,
}

from . import _fake
from ._api import (
    addAfterFrameRender,
    addAfterRender,
    addAutolabel,
    addBeforeFrameRender,
    addBeforeRender,
    addKnobChanged,
    addOnCreate,
    addOnDestroy,
    addOnScriptClose,
    addOnScriptLoad,
    addOnScriptSave,
    addOnUserCreate,
    addUpdateUI,
    knobDefault,
    modified,
    nodeCopy,
    nodePaste,
    pluginAddPath,
    pluginAppendPath,
    pluginPath,
    removeAfterFrameRender,
    removeAfterRender,
    removeAutolabel,
    removeBeforeFrameRender,
    removeBeforeRender,
    removeKnobChanged,
    removeOnCreate,
    removeOnDestroy,
    removeOnScriptClose,
    removeOnScriptLoad,
    removeOnScriptSave,
    removeOnUserCreate,
    removeUpdateUI,
    scriptClear,
    scriptClose,
    scriptName,
    scriptOpen,
    scriptReadFile,
    scriptSave,
    scriptSaveAs,
    scriptSource,
)
from ._knobs import (
    ALWAYS_SAVE,
    DISABLED,
    DO_NOT_WRITE,
    ENDLINE,
    INVISIBLE,
    NO_ANIMATION,
    NO_UNDO,
    READ_ONLY,
    SAVE_MENU,
    STARTLINE,
    TABBEGINCLOSEDGROUP,
    TABBEGINGROUP,
    TABENDGROUP,
    Array_Knob,
    BeginTabGroup_Knob,
    Boolean_Knob,
    ColorChip_Knob,
    Disable_Knob,
    Double_Knob,
    EndTabGroup_Knob,
    Enumeration_Knob,
    EvalString_Knob,
    File_Knob,
    Int_Knob,
    Knob,
    Multiline_Eval_String_Knob,
    PyCustom_Knob,
    PyScript_Knob,
    PythonKnob,
    Script_Knob,
    String_Knob,
    Tab_Knob,
    Text_Knob,
    Unsigned_Knob,
    XY_Knob,
)
from ._menus import (
    Menu,
    MenuItem,
    ToolBar,
    alert,
    ask,
    askWithCancel,
    choice,
    critical,
    debug,
    error,
    getFramesAndViews,
    getInput,
    getPaneFor,
    menu,
    message,
    thisPane,
    toolbar,
    tprint,
    warning,
)
from ._nodes import (
    EXPRESSIONS,
    HIDDEN_INPUTS,
    INPUTS,
    FrameRange,
    FrameRanges,
    Gizmo,
    Group,
    Node,
    NodeConstructor,
    Nodes,
    PanelNode,
    Root,
    allNodes,
    createNode,
    delete,
    dependencies,
    endGroup,
    exists,
    frame,
    root,
    selectAll,
    selectedNode,
    selectedNodes,
    thisClass,
    thisGroup,
    thisKnob,
    thisNode,
    thisParent,
    thisRoot,
    toNode,
)
from ._render import execute, executing
from ._threads import (
    ProgressTask,
    executeInMainThread,
    executeInMainThreadWithResult,
)
from ._undo import Undo

nodes = Nodes()
render = execute

_fake.reset()
