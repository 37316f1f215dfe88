"""The baseline the benchmarks hold the scheduler against: a minimal direct loop.

Per server ``in_flight`` threads, each on its own websocket and ``requests`` session: take the
next frame, ``POST /prompt``, wait for ``executing`` with ``node`` null for that prompt, ``GET
/view`` the ``executed`` image and write it to disk. No health checks, retries or failover: what
a careful script would do, so "frames/s over this loop" says what the scheduler's bookkeeping
costs. Shared by ``makespan.py`` and ``client_scale.py``.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = ["ServerUrls", "direct_loop", "frame_prompt"]


class ServerUrls(Protocol):
    """A server to talk to (``Sim`` subprocesses and in-process ``SimServer`` both are)."""

    @property
    def url(self) -> str: ...

    @property
    def ws_url(self) -> str: ...


def frame_prompt(workflow: dict[str, Any], frame: int) -> dict[str, Any]:
    """``workflow`` (an ``EmptyImage`` node "1", a ``SaveImage`` node "3") made distinct per
    frame, as the scheduler's ``1.color={frame}`` override makes it."""
    prompt = copy.deepcopy(workflow)
    prompt["1"]["inputs"]["color"] = frame
    prompt["3"]["inputs"]["filename_prefix"] = f"direct/f{frame}"
    return prompt


def direct_loop(
    servers: Sequence[ServerUrls],
    workflow: dict[str, Any],
    frames: int,
    out: Path,
    *,
    in_flight: int = 1,
    timeout: float = 30.0,
) -> float:
    """Render frames ``1..frames`` over ``servers`` and write them into ``out``; the seconds it
    took. The first error of any thread is raised after all have stopped."""
    todo: queue.Queue[int] = queue.Queue()
    for frame in range(1, frames + 1):
        todo.put(frame)
    out.mkdir(parents=True, exist_ok=True)
    errors: list[BaseException] = []

    def worker(server: ServerUrls) -> None:
        try:
            _serve(server, workflow, todo, out, timeout)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(server,), name=f"direct-{n}-{k}")
        for n, server in enumerate(servers)
        for k in range(in_flight)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    if errors:
        raise errors[0]
    return elapsed


def _serve(
    server: ServerUrls,
    workflow: dict[str, Any],
    todo: queue.Queue[int],
    out: Path,
    timeout: float,
) -> None:
    """One thread's loop: frames from ``todo`` until it is empty."""
    import requests
    import websocket

    client_id = uuid.uuid4().hex
    with requests.Session() as session:
        session.trust_env = False
        ws = websocket.create_connection(f"{server.ws_url}?clientId={client_id}", timeout=timeout)
        try:
            while True:
                try:
                    frame = todo.get_nowait()
                except queue.Empty:
                    return
                prompt_id = uuid.uuid4().hex
                body = {
                    "prompt": frame_prompt(workflow, frame),
                    "client_id": client_id,
                    "prompt_id": prompt_id,
                }
                session.post(f"{server.url}/prompt", json=body, timeout=timeout).raise_for_status()
                image = _wait_for_image(ws, prompt_id)
                resp = session.get(f"{server.url}/view", params=image, timeout=timeout)
                resp.raise_for_status()
                (out / f"d.{frame:04d}.png").write_bytes(resp.content)
        finally:
            ws.close()


def _wait_for_image(ws: Any, prompt_id: str) -> dict[str, Any]:
    """The image the prompt's ``executed`` message named, once ``executing`` null arrives."""
    import json

    image = None
    while True:
        message = ws.recv()
        if not isinstance(message, str):
            continue
        data = json.loads(message)
        payload = data.get("data") or {}
        if payload.get("prompt_id") != prompt_id:
            continue
        if data.get("type") == "executed" and (payload.get("output") or {}).get("images"):
            image = payload["output"]["images"][0]
        if data.get("type") == "executing" and payload.get("node") is None:
            if image is None:
                raise RuntimeError(f"prompt {prompt_id} ended without an image")
            return image
