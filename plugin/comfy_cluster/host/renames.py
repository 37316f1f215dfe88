"""Keeping a running job with its node when the node is renamed. Main thread.

Jobs are keyed by node name (workers must never hold a node), and Nuke does not say what a
renamed node was called. So a job whose name no longer resolves to a node, and whose node was not
deleted, is an *orphan*, and the renamed node adopts it: the registry entry, the monitor, the
dispatcher's pending knob updates and the exporter all move to the new name while the job keeps
running.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from comfy_cluster.host import knobs as K
from comfy_cluster.host.dispatch import Dispatcher
from comfy_cluster.host.graph import at_root, find_node
from comfy_cluster.host.jobs import JobRegistry, RunningJob
from comfy_cluster.host.settings import output_path

__all__ = ["JobRenames"]

_log = logging.getLogger(__name__)

#: Registry name of a job whose name a renamed node took over (never a valid node name: ``toNode``
#: finds nothing, so the job's end touches no node).
RETIRED_PREFIX = "-comfy_cluster-retired-"


class JobRenames:
    """Finds a node's job through renames and moves it to the node's current name."""

    def __init__(self, nuke: Any, jobs: JobRegistry, dispatcher: Dispatcher) -> None:
        self._nuke = nuke
        self._jobs = jobs
        self._dispatcher = dispatcher

    def job_for(self, node: Any, *, renamed: bool = False) -> Optional[RunningJob]:
        """``node``'s running job, following a rename the registry has not seen yet.

        ``renamed`` (the node's "name" knob changed): an orphan in the same group is this
        node's; if several are, the one writing this node's Output. Otherwise (Render, Cancel,
        delete, panel open: a rename we did not see, e.g. of an enclosing Group) the orphan must
        also write this node's Output. Ambiguous: nothing is adopted. A job still registered
        under this node's name whose node was deleted (its cancel has not ended) is moved out of
        the way first: this node only took the name.
        """
        name = node.fullName()
        record = self._jobs.get(name)
        if record is not None and record.node_gone:
            self._retire(record)
            record = None
        if record is not None or not self._jobs.names():
            return record
        record = self._orphan_of(node, renamed)
        if record is not None:
            self.rename_job(record.node_name, name)
        return record

    def node_of(self, record: RunningJob) -> Optional[Any]:
        """The node a job (already out of the registry: it ended) belongs to: the one with its
        name, else, when that name is gone and the node was not deleted, the one node of the
        class that runs no job and writes the job's Output (renamed without knobChanged: a
        ``setValue`` on "name" in a Nuke that reports only user edits, or a Group renamed)."""
        node = find_node(self._nuke, record.node_name)
        if node is not None or record.node_gone:
            return node
        with at_root(self._nuke):
            nodes = self._nuke.allNodes(K.GIZMO_CLASS, self._nuke.root(), recurseGroups=True)
        candidates = [
            n
            for n in nodes
            if self._jobs.get(n.fullName()) is None and output_path(n) == record.job.output_pattern
        ]
        return candidates[0] if len(candidates) == 1 else None

    def rename_job(self, old_name: str, new_name: str) -> Optional[RunningJob]:
        """Move the job of node ``old_name`` to ``new_name``; it keeps running.

        Order matters: the monitor switches names under its lock first (so no worker hands the
        dispatcher another update under the old name), then the dispatcher's pending updates
        are re-keyed, then the exporter's later batches resolve the new name. The job's end,
        posted by the monitor, reads the name when it runs, so it lands on the renamed node even
        if it was queued before the rename. A stale job still registered under ``new_name`` (its
        node was deleted and its cancel has not ended yet) is first moved to a name no node can
        have, so its end still finds it and touches nothing.
        """
        if old_name == new_name:
            return self._jobs.get(new_name)
        record = self._jobs.get(old_name)
        if record is None:
            return None
        occupant = self._jobs.get(new_name)
        if occupant is not None:
            self._retire(occupant)
        self._move(record, new_name)
        return record

    def _orphan_of(self, node: Any, renamed: bool) -> Optional[RunningJob]:
        """The one orphaned job that must be ``node``'s (see :meth:`job_for`), or None."""
        orphans = [
            r
            for r in self._jobs.all()
            if not r.node_gone and find_node(self._nuke, r.node_name) is None
        ]
        if not orphans:
            return None
        name = node.fullName()
        parent, _, leaf = name.rpartition(".")
        output = output_path(node)
        if renamed:
            candidates = [r for r in orphans if r.node_name.rpartition(".")[0] == parent]
            if len(candidates) > 1:
                candidates = [r for r in candidates if r.job.output_pattern == output]
        else:
            candidates = [
                r
                for r in orphans
                if r.job.output_pattern == output
                and (
                    r.node_name.rpartition(".")[0] == parent
                    or r.node_name.rpartition(".")[2] == leaf
                )
            ]
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            _log.warning(
                "comfy_cluster: cannot tell which running job %s is (%s)",
                name,
                ", ".join(r.node_name for r in candidates),
            )
        return None

    def _retire(self, record: RunningJob) -> None:
        """Move a job whose node is gone (or unknown) out of the way of a live node's name."""
        self._move(record, f"{RETIRED_PREFIX}{record.job.job_id}", report=False)

    def _move(self, record: RunningJob, new_name: str, *, report: bool = True) -> None:
        old_name = record.node_name
        self._jobs.rename(old_name, new_name)
        record.monitor.rename(new_name, report=report)
        self._dispatcher.rename(old_name, new_name)
        record.exporter.rename(new_name)
