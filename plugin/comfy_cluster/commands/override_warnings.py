"""Warn about ``--set`` overrides that the render replaces anyway.

Why: the output node's ``filename_prefix`` is where ComfyUI writes on the server; the render
sets it last, to a unique name per frame, and copies each image to ``--output``. A user who
types ``--set 3.filename_prefix=shots/a`` expects the frames there, and without a word they are
not. We keep ``--output`` the only destination (two would make resume and overwrite ambiguous)
and say so, naming the node.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ignored_override_warnings"]

#: Inputs of the output node that the render always sets itself.
REPLACED_INPUTS = ("filename_prefix",)


def ignored_override_warnings(job: Any) -> list[str]:
    """One sentence per override of ``job`` that the render replaces (empty when none).

    ``job`` is a checked ``RenderJob``; its overrides already resolve (build_job made sure).
    """
    from comfy_cluster.core.errors import WorkflowError
    from comfy_cluster.core.workflow import Workflow

    workflow = Workflow.load(job.workflow)
    output = workflow.output_node(job.output_node)
    warnings = []
    for override in job.overrides:
        if override.input not in REPLACED_INPUTS:
            continue
        try:
            node = workflow.resolve(override.node)
        except WorkflowError:
            continue
        if node == output:
            warnings.append(
                f"--set {override.node}.{override.input}: ignored; node "
                f"{workflow.describe(node)} is the output node and the render names its files "
                f"itself; frames go to --output only ({job.output_pattern})"
            )
    return warnings
