"""The model side of a job's book: :class:`ModelTurns` (a part of :class:`JobBook`).

The worker slots feed the job's :class:`~comfy_cluster.core.engine.affinity.ModelAffinity`
with what they read in their server's queue and with our own prompts; the book's dispatch asks it
which free servers the next chunk may go to. Methods of the book: they hold its one lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from comfy_cluster.core.engine.book_parts import BookParts
from comfy_cluster.core.engine.chunk_queue import Chooser
from comfy_cluster.core.engine.model_names import QueueModels, prompt_models
from comfy_cluster.core.frames import Chunk
from comfy_cluster.core.workflow import Workflow

__all__ = ["ModelTurns", "workflow_models"]


def workflow_models(workflow: Any) -> frozenset:
    """The checkpoints ``workflow`` loads (empty when it loads none or cannot be read here:
    the job's plan reports a bad workflow, not this)."""
    try:
        return prompt_models(Workflow.load(workflow).nodes)
    except Exception:
        return frozenset()


class ModelTurns(BookParts):
    """The book's methods about models. Any thread."""

    def _affine(self, chooser: Chooser, eligible: Sequence[str]) -> Chooser:
        """``chooser`` offered only the free servers model affinity admits."""

        def choose(
            chunk: Chunk,
            free: Sequence[str],
            in_flight: Any,
            remaining: int,
            able: Sequence[str],
        ) -> Optional[tuple[str, str]]:
            models = self.models
            if not models.enabled:
                return chooser(chunk, free, in_flight, remaining, able)
            admitted = models.admit(free, eligible, remaining)
            if not admitted:
                return None
            able = [n for n in able if not models.lost(n)]
            choice = chooser(chunk, admitted, in_flight, remaining, able)
            if choice is not None:
                models.assigned(choice[0])
            return choice

        return choose

    def models_due(self, server: str, interval: float) -> bool:
        """Whether a slot of ``server`` reads its queue's models now (one slot per interval)."""
        with self._cond:
            return self.models.poll_due(server, interval)

    def models_seen(self, server: str, view: QueueModels, held: Optional[frozenset] = None) -> None:
        """A slot read ``server``'s queue: update what it holds; new choices may follow."""
        with self._cond:
            self.models.observe(server, view, held)
            self._dispatch_locked()  # wakes the slots it hands chunks to

    def model_submitted(self, server: str) -> bool:
        """A prompt of ours goes to ``server``; whether it loads our model there."""
        with self._cond:
            return self.models.submitted(server)

    def model_prompt_done(self, server: str, seconds: float, loaded: bool) -> None:
        with self._cond:
            self.models.prompt_done(server, seconds, loaded)

    def model_lost(self, server: str) -> bool:
        """Another client's model took ``server``: send nothing more there."""
        with self._cond:
            return self.models.lost(server)

    def model_pending(self, server: str, prompt_id: str) -> bool:
        with self._cond:
            return self.models.pending_here(server, prompt_id)
