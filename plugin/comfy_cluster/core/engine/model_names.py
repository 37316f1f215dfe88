"""Which checkpoints a prompt loads, ours or another client's: the loader inputs only.

A ComfyUI server keeps a few models in memory and pays a load to switch, so the scheduler wants
to know what each server holds and what its queue will make it load. That is read from the
loader nodes' inputs (``ckpt_name`` of ``CheckpointLoaderSimple`` and friends) of the prompts in
``/queue`` and the newest ``/history`` entries. Only positions 0-2 of a queue item (number, id,
prompt) are read: position 3, ``extra_data``, can hold another client's API keys and is never
touched here.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["LOADER_INPUTS", "QueueModels", "history_models", "prompt_models", "queue_models"]

#: Loader node class -> the input naming the model it loads.
LOADER_INPUTS: Mapping[str, str] = {
    "CheckpointLoaderSimple": "ckpt_name",
    "CheckpointLoader": "ckpt_name",
    "ImageOnlyCheckpointLoader": "ckpt_name",
    "unCLIPCheckpointLoader": "ckpt_name",
    "UNETLoader": "unet_name",
}


def prompt_models(prompt: Any) -> frozenset:
    """The model names an API-format prompt's loader nodes load (empty: none, or not a prompt)."""
    if not isinstance(prompt, Mapping):
        return frozenset()
    names = set()
    for node in prompt.values():
        if not isinstance(node, Mapping):
            continue
        key = LOADER_INPUTS.get(str(node.get("class_type")))
        inputs = node.get("inputs")
        if key is None or not isinstance(inputs, Mapping):
            continue
        value = inputs.get(key)
        if isinstance(value, str) and value:
            names.add(value)
    return frozenset(names)


@dataclass(frozen=True)
class QueueModels:
    """Other clients' prompts on one server, as model sets in run order.

    ``running``: the models of the running prompt when it is not ours (else empty);
    ``ahead`` / ``behind``: pending foreign prompts before our first pending prompt / after our
    last one (with none of ours pending: ``behind`` while ours runs, else ``ahead``);
    ``ours_running``: one of ours runs; ``ours_pending``: our prompt ids still pending.
    """

    running: frozenset = frozenset()
    ahead: tuple = ()
    behind: tuple = ()
    ours_running: bool = False
    ours_pending: frozenset = frozenset()

    @property
    def idle(self) -> bool:
        """Nothing of anyone's runs or waits."""
        return not (self.running or self.ahead or self.behind or self.ours_running) and not (
            self.ours_pending
        )


def _is_item(item: Any) -> bool:
    """A queue or history item as ComfyUI sends it: a list whose number (its place in the run
    order), prompt id and prompt are present. Anything else is a server's junk, skipped."""
    return isinstance(item, (list, tuple)) and len(item) >= 3 and isinstance(item[0], (int, float))


def _items(body: Mapping[str, Any], key: str) -> list:
    """The items under ``key`` in run order (equal numbers keep the server's order)."""
    items = body.get(key)
    if not isinstance(items, list):
        return []
    return sorted((i for i in items if _is_item(i)), key=lambda i: i[0])


def queue_models(body: Any, ours: Container[str]) -> QueueModels:
    """Read ``GET /queue`` (as sent) into :class:`QueueModels`; ``ours`` are our prompt ids."""
    if not isinstance(body, Mapping):
        return QueueModels()
    running = frozenset()
    ours_running = False
    for item in _items(body, "queue_running"):
        if str(item[1]) in ours:
            ours_running = True
        else:
            running = running | prompt_models(item[2])
    pending = [
        (str(i[1]) in ours, str(i[1]), prompt_models(i[2])) for i in _items(body, "queue_pending")
    ]
    mine = [n for n, (is_ours, _, _) in enumerate(pending) if is_ours]
    if mine:
        first, last = mine[0], mine[-1]
    else:  # none of ours waits: the others wait behind our running prompt, or ahead of our next
        first = last = -1 if ours_running else len(pending)  # pragma: no mutate (any n < 0)
    # Before our first pending prompt and after our last, every prompt is another client's.
    ahead = tuple(m for n, (_, _, m) in enumerate(pending) if n < first and m)
    behind = tuple(m for n, (_, _, m) in enumerate(pending) if n > last and m)
    return QueueModels(
        running=running,
        ahead=ahead,
        behind=behind,
        ours_running=ours_running,
        ours_pending=frozenset(pid for o, pid, _ in pending if o),
    )


def history_models(body: Any) -> Optional[frozenset]:
    """The models of the newest ``/history`` entry that names any (``None``: none does)."""
    if not isinstance(body, Mapping):
        return None
    named: list[tuple[float, frozenset]] = []
    for entry in body.values():
        item = entry.get("prompt") if isinstance(entry, Mapping) else None
        if _is_item(item):
            models = prompt_models(item[2])
            if models:
                named.append((item[0], models))
    return max(named, key=lambda n: n[0])[1] if named else None
