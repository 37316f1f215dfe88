"""The aiohttp application: ComfyUI 0.3.64's routes, websocket and worker, plus ``/sim/*`` control.

Every route is registered bare and under ``/api``. Error shapes follow server.py: JSON 400s from
validation, bare status codes for refusals, and aiohttp's own plain-text 500 wherever the real
handler raises (bad JSON, wrong body types). One ``SimState`` per app; it lives on the server's
event loop thread, and only ``queue`` (locked) and ``options`` (swapped whole) are read elsewhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import mimetypes
import os
import platform
import random
import socket
import struct
import sys
import time
import uuid
from typing import Any, Callable, Optional

from aiohttp import WSMsgType, web

from . import hostile
from .executor import Executor, ServerStopping
from .models import FOREIGN_CLIENT_ID, ModelMemory, foreign_prompt, model_nodes, with_files
from .nodes import Dirs, NodeDef, build_registry
from .options import SimOptions
from .prompt_queue import PromptQueue
from .validation import validate_prompt

LOG = logging.getLogger("comfy_cluster.sim")
MAX_UPLOAD_SIZE = 100 * 1024 * 1024
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}
PLAIN_500 = "500 Internal Server Error\n\nServer got itself in trouble"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def reset_transport(transport: Any) -> None:
    """Close a connection with a TCP reset (SO_LINGER 0), as a crashed process would."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class SimState:
    """Everything one running server knows; reset by a restart (like ComfyUI's memory)."""

    def __init__(
        self,
        options: SimOptions,
        dirs: Dirs,
        *,
        get_options: Callable[[], SimOptions],
        set_options: Callable[[SimOptions], None],
        on_prompt: Callable[[str], None],
        on_die: Callable[[], None],
        argv: list[str],
    ) -> None:
        self._get_options = get_options
        self._set_options = set_options
        self.on_prompt = on_prompt
        self.on_die = on_die
        self.dirs = dirs
        self.argv = argv
        self.registry: dict[str, NodeDef] = {**build_registry(), **model_nodes()}
        self._classes_key: Any = None
        self._classes: dict[str, NodeDef] = {}
        #: Checkpoints in memory; a restart empties it (a new process).
        self.models = ModelMemory()
        #: Wall seconds spent executing our clients' prompts and the foreign ones.
        self.busy_own = 0.0
        self.busy_foreign = 0.0
        self.foreign_prompts = 0
        self.foreign_waiting = 0
        self.queue = PromptQueue()
        self.number = 0
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.sockets_metadata: dict[str, dict] = {}
        self.transports: dict[str, Any] = {}
        self.client_id: Optional[str] = None
        self.last_node_id: Optional[str] = None
        self.interrupted = False
        self.started_prompts = 0
        self.rng = random.Random()
        self.executor = Executor(self)
        self.messages: Optional[asyncio.Queue] = None
        self.work_ready: Optional[asyncio.Event] = None
        self.hang_release: Optional[asyncio.Event] = None
        self.drop_counts: dict[str, int] = {}
        self.tasks: list[asyncio.Task] = []

    # options are owned by the harness (they survive restarts); read them fresh each time
    @property
    def options(self) -> SimOptions:
        return self._get_options()

    def set_options(self, new: SimOptions) -> None:
        self._set_options(new)
        self.options_changed()

    def options_changed(self) -> None:
        """On the loop thread after any options change: release hung prompts."""
        if self.hang_release is not None and not self.options.hang_prompts:
            self.hang_release.set()

    @property
    def classes(self) -> dict[str, NodeDef]:
        """The installed node classes, with the loaders listing this server's files."""
        options = self.options
        key = (options.missing_classes, options.models, options.loras)
        if key != self._classes_key:
            missing = set(options.missing_classes)
            present = {k: v for k, v in self.registry.items() if k not in missing}
            self._classes = with_files(present, options.models, options.loras)
            self._classes_key = key
        return self._classes

    # --- another client's prompts (``foreign_load``) -----------------------------------------

    def maybe_queue_foreign(self) -> None:
        """Queue one foreign prompt when the foreign share of busy time so far is below F."""
        share = self.options.foreign_load
        if share <= 0 or self.foreign_waiting:
            return
        busy = self.busy_own + self.busy_foreign
        if busy <= 0 or self.busy_foreign >= share * busy:
            return
        self.foreign_prompts += 1
        self.foreign_waiting += 1
        prompt_id = str(uuid.uuid4())
        graph = foreign_prompt(self.options.foreign_checkpoint, self.foreign_prompts)
        extra = {
            "client_id": FOREIGN_CLIENT_ID,
            "extra_pnginfo": {"workflow": {"note": "another artist's prompt (sim foreign_load)"}},
        }
        self.queue.put([self.number, prompt_id, graph, extra, ["9"]])
        self.number += 1
        self.queue_updated()
        assert self.work_ready is not None
        self.work_ready.set()

    def stats(self) -> dict[str, Any]:
        """``GET /sim/stats``: model memory, loads and busy time (for benches and tests)."""
        return {
            "models": {**self.models.stats(), "capacity": self.options.models_in_memory},
            "started_prompts": self.started_prompts,
            "busy_seconds": {"own": self.busy_own, "foreign": self.busy_foreign},
            "foreign_prompts": self.foreign_prompts,
        }

    def supports_preview_metadata(self, sid: Optional[str]) -> bool:
        meta = self.sockets_metadata.get(sid) if sid is not None else None
        return bool(meta and meta.get("feature_flags", {}).get("supports_preview_metadata"))

    # --- messages (loop thread) ---------------------------------------------------------------

    def send(self, event: str, data: Any, sid: Optional[str], *, prompt_id: Optional[str] = None):
        assert self.messages is not None
        self.messages.put_nowait((event, data, sid, prompt_id))

    def send_binary(self, frame: bytes, sid: Optional[str], prompt_id: Optional[str] = None):
        self.send("", frame, sid, prompt_id=prompt_id)

    def queue_info(self) -> dict:
        return {"exec_info": {"queue_remaining": self.queue.remaining()}}

    def queue_updated(self) -> None:
        self.send("status", {"status": self.queue_info()}, None)

    async def publisher(self) -> None:
        assert self.messages is not None
        while True:
            event, data, sid, prompt_id = await self.messages.get()
            targets = (
                list(self.sockets.items())
                if sid is None
                else ([(sid, self.sockets[sid])] if sid in self.sockets else [])
            )
            for target_sid, ws in targets:
                try:
                    if event == "":
                        await ws.send_bytes(data)
                    else:
                        await ws.send_json({"type": event, "data": data})
                except Exception as ex:  # a socket closing under us, as ComfyUI logs and goes on
                    LOG.debug("send to %s failed: %s", target_sid, ex)
                    continue
                limit = self.options.drop_ws_after_events
                if limit is not None and prompt_id is not None and sid is not None:
                    count = self.drop_counts.get(prompt_id, 0) + 1
                    self.drop_counts[prompt_id] = count
                    if count == limit:
                        LOG.info("fault: dropping websocket %s after %d events", sid, count)
                        reset_transport(self.transports.get(target_sid))

    # --- the worker (loop thread) -------------------------------------------------------------

    async def worker(self) -> None:
        assert self.work_ready is not None
        while True:
            if not self.queue.snapshot()[1]:
                self.work_ready.clear()
                await self.work_ready.wait()
                continue
            limit = self.options.die_after_prompts
            if limit is not None and self.started_prompts >= limit:
                LOG.info("fault: dying after %d prompts", self.started_prompts)
                self.on_die()
                return
            got = self.queue.get()
            if got is None:
                continue
            item_id, item = got
            self.started_prompts += 1
            if self.options.hang_prompts:
                self.hang_release = asyncio.Event()
                await self.hang_release.wait()
                self.hang_release = None
            self.queue_updated()
            options = self.options
            foreign = item[3].get("client_id") == FOREIGN_CLIENT_ID
            extra = options.warmup_seconds if self.started_prompts == 1 else 0.0
            if foreign:
                extra += options.scaled(options.foreign_seconds)
            began = time.monotonic()
            try:
                success, messages, result = await self.executor.execute(
                    item, extra_seconds=extra, node_seconds=0.0 if foreign else None
                )
            except ServerStopping:
                return
            except Exception:  # a sim bug must not wedge the queue: record it as a failed prompt
                LOG.exception("sim executor failed on %s", item[1])
                success, messages, result = False, [], {"outputs": {}, "meta": {}}
            status = {
                "status_str": "success" if success else "error",
                "completed": success,
                "messages": messages,
            }
            self.queue.task_done(item_id, result, status)
            if foreign:
                self.busy_foreign += time.monotonic() - began
                self.foreign_waiting -= 1
            else:
                self.busy_own += time.monotonic() - began
            self.maybe_queue_foreign()
            self.queue_updated()
            if self.client_id is not None:
                self.send(
                    "executing",
                    {"node": None, "prompt_id": item[1]},
                    self.client_id,
                    prompt_id=item[1],
                )
            self.drop_counts.pop(item[1], None)


def _routes(state: SimState) -> list[tuple[str, str, Callable]]:
    """(method, path, handler) for the ComfyUI routes; each is also mounted under /api."""

    async def system_stats(request: web.Request) -> web.Response:
        total, free = _memory()
        return web.json_response(
            {
                "system": {
                    "os": os.name,
                    "ram_total": total,
                    "ram_free": free,
                    "comfyui_version": "0.3.64",
                    "required_frontend_version": "1.27.10",
                    "installed_templates_version": "0.1.95",
                    "required_templates_version": "0.1.95",
                    "python_version": sys.version,
                    "pytorch_version": "2.14.1+cpu (comfy_cluster sim)",
                    "embedded_python": False,
                    "argv": state.argv,
                },
                "devices": [
                    {
                        "name": "cpu",
                        "type": "cpu",
                        "index": None,
                        "vram_total": total,
                        "vram_free": free,
                        "torch_vram_total": total,
                        "torch_vram_free": free,
                    }
                ],
            }
        )

    async def features(request: web.Request) -> web.Response:
        return web.json_response(SERVER_FEATURES)

    def node_info(name: str) -> dict:
        info = json.loads(json.dumps(state.classes[name].info))
        if name == "LoadImage":
            files = sorted(
                f.name
                for f in state.dirs.input_dir.iterdir()
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            )
            info["input"]["required"]["image"][0] = files
        return info

    async def object_info(request: web.Request) -> web.Response:
        return web.json_response({name: node_info(name) for name in state.classes})

    async def object_info_one(request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        if name not in state.classes:
            return web.json_response({})
        return web.json_response({name: node_info(name)})

    async def get_prompt(request: web.Request) -> web.Response:
        return web.json_response(state.queue_info())

    async def post_prompt(request: web.Request) -> web.Response:
        options = state.options
        if options.fail_prompt_posts > 0:
            state.set_options(options.replace(fail_prompt_posts=options.fail_prompt_posts - 1))
            return web.Response(status=500, text=PLAIN_500)
        json_data = await request.json()
        if "number" in json_data:
            number: Any = float(json_data["number"])
        else:
            number = state.number
            if json_data.get("front"):
                number = -number
            state.number += 1
        if "prompt" not in json_data:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        targets = json_data.get("partial_execution_targets")
        valid = validate_prompt(prompt, state.classes, state.dirs, targets)
        extra_data = json_data.get("extra_data", {})
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not valid[0]:
            LOG.info("invalid prompt: %s", valid[1])
            return web.json_response({"error": valid[1], "node_errors": valid[3]}, status=400)
        state.queue.put([number, prompt_id, prompt, extra_data, valid[2]])
        state.on_prompt(prompt_id)
        state.queue_updated()
        assert state.work_ready is not None
        state.work_ready.set()
        return web.json_response(
            {"prompt_id": prompt_id, "number": number, "node_errors": valid[3]}
        )

    async def get_queue(request: web.Request) -> web.Response:
        running, pending = state.queue.snapshot()
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def post_queue(request: web.Request) -> web.Response:
        json_data = await request.json()
        if json_data.get("clear"):
            state.queue.wipe()
            state.queue_updated()
        if "delete" in json_data:
            for prompt_id in json_data["delete"]:
                if state.queue.delete(prompt_id):
                    state.queue_updated()
        return web.Response(status=200)

    async def interrupt(request: web.Request) -> web.Response:
        try:
            json_data = await request.json()
        except json.JSONDecodeError:
            json_data = {}
        prompt_id = json_data.get("prompt_id") if isinstance(json_data, dict) else None
        if prompt_id:
            running, _ = state.queue.snapshot()
            if any(item[1] == prompt_id for item in running):
                state.interrupted = True
            else:
                LOG.info("interrupt: prompt %s not currently running", prompt_id)
        else:
            state.interrupted = True
        return web.Response(status=200)

    async def get_history(request: web.Request) -> web.Response:
        query = request.rel_url.query
        max_items = int(query["max_items"]) if "max_items" in query else None
        offset = int(query["offset"]) if "offset" in query else -1
        return web.json_response(state.queue.get_history(max_items=max_items, offset=offset))

    async def get_history_one(request: web.Request) -> web.Response:
        return web.json_response(state.queue.get_history(request.match_info["prompt_id"]))

    async def post_history(request: web.Request) -> web.Response:
        json_data = await request.json()
        if json_data.get("clear"):
            state.queue.wipe_history()
        if "delete" in json_data:
            for prompt_id in json_data["delete"]:
                state.queue.delete_history(prompt_id)
        return web.Response(status=200)

    async def free(request: web.Request) -> web.Response:
        json_data = await request.json()
        if json_data.get("unload_models", False):
            state.models.clear()
        if json_data.get("free_memory", False):
            state.executor.free()
        return web.Response(status=200)

    async def view(request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        if "filename" not in query:
            return web.Response(status=404)
        name = query["filename"]
        kind = None
        for k in ("output", "input", "temp"):
            if name.endswith(f"[{k}]"):
                name, kind = name[: -len(f"[{k}]")].strip(), k
                break
        if not name:
            return web.Response(status=400)
        if name[0] == "/" or ".." in name:
            return web.Response(status=400)
        base = state.dirs.by_type(kind or query.get("type", "output"))
        if base is None:
            return web.Response(status=400)
        base_s = os.path.realpath(base)
        folder = base_s
        if "subfolder" in query:
            folder = os.path.realpath(os.path.join(base_s, query["subfolder"]))
            if os.path.commonpath((folder, base_s)) != base_s:
                return web.Response(status=403)
        filename = os.path.basename(name)
        path = os.path.realpath(os.path.join(folder, filename))
        if os.path.commonpath((path, base_s)) != base_s:
            return web.Response(status=403)
        if not os.path.isfile(path):
            return web.Response(status=404)
        fault = state.options.view_fault
        if fault is not None:
            with open(path, "rb") as fh:
                return await hostile.bad_view(request, fault, fh.read())
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in {
            "text/html",
            "text/html-sandboxed",
            "application/xhtml+xml",
            "text/javascript",
            "text/css",
        }:
            content_type = "application/octet-stream"
        with open(path, "rb") as fh:  # small files; reading here keeps no executor thread around
            body = fh.read()
        return web.Response(
            body=body,
            headers={"Content-Disposition": f'filename="{filename}"', "Content-Type": content_type},
        )

    async def upload_image(request: web.Request) -> web.Response:
        delay = state.options.upload_delay
        if delay > 0:
            await asyncio.sleep(delay)
        if not request.content_type.startswith("multipart/"):
            return web.Response(status=400)
        post = await request.post()
        image = post.get("image")
        kind = post.get("type") or "input"
        base = state.dirs.by_type(str(kind))
        if base is None:
            raise ValueError(f"unknown upload type {kind!r}")  # the real server's 500
        if image is None or not hasattr(image, "file"):
            return web.Response(status=400)
        filename = image.filename
        if not filename:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder", ""))
        base_s = os.path.realpath(base)
        folder = os.path.join(base_s, os.path.normpath(subfolder))
        path = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((base_s, os.path.realpath(path))) != base_s or path == base_s:
            return web.Response(status=400)
        os.makedirs(folder, exist_ok=True)
        data = image.file.read()
        overwrite = post.get("overwrite")
        stem, ext = os.path.splitext(filename)
        duplicate = False
        if overwrite not in ("true", "1"):
            i = 1
            while os.path.exists(path):
                with open(path, "rb") as fh:
                    if hashlib.sha256(fh.read()).digest() == hashlib.sha256(data).digest():
                        duplicate = True
                        break
                filename = f"{stem} ({i}){ext}"
                path = os.path.join(folder, filename)
                i += 1
        if not duplicate:
            with open(path, "wb") as fh:
                fh.write(data)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        giant = state.options.ws_message_bytes
        if giant is not None:
            hostile.send_giant_message(request, giant)  # before the socket can get broadcasts
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            state.sockets.pop(sid, None)  # a reconnect replaces the old socket (dict semantics)
        else:
            sid = uuid.uuid4().hex
        state.sockets[sid] = ws
        state.sockets_metadata[sid] = {"feature_flags": {}}
        state.transports[sid] = request.transport
        try:
            await ws.send_json(
                {"type": "status", "data": {"status": state.queue_info(), "sid": sid}}
            )
            if state.client_id == sid and state.last_node_id is not None:
                await ws.send_json({"type": "executing", "data": {"node": state.last_node_id}})
            first = True
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                        if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                            state.sockets_metadata[sid]["feature_flags"] = data.get("data", {})
                            await ws.send_json({"type": "feature_flags", "data": SERVER_FEATURES})
                        first = False
                    except ValueError:
                        LOG.debug("invalid JSON from %s", sid)
        finally:
            # The old socket's cleanup removes whatever is stored under sid now: ComfyUI's pitfall.
            state.sockets.pop(sid, None)
            state.sockets_metadata.pop(sid, None)
            state.transports.pop(sid, None)
        return ws

    return [
        ("GET", "/system_stats", system_stats),
        ("GET", "/features", features),
        ("GET", "/object_info", object_info),
        ("GET", "/object_info/{node_class}", object_info_one),
        ("GET", "/prompt", get_prompt),
        ("POST", "/prompt", post_prompt),
        ("GET", "/queue", get_queue),
        ("POST", "/queue", post_queue),
        ("POST", "/interrupt", interrupt),
        ("GET", "/history", get_history),
        ("GET", "/history/{prompt_id}", get_history_one),
        ("POST", "/history", post_history),
        ("POST", "/free", free),
        ("GET", "/view", view),
        ("POST", "/upload/image", upload_image),
        ("GET", "/ws", websocket),
    ]


def _memory() -> tuple[int, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 8 << 30, 4 << 30


def build_app(
    state: SimState, apply_faults: Callable[[dict[str, Any]], SimOptions]
) -> web.Application:
    """The application for one run of a server; ``apply_faults`` backs POST /sim/faults."""

    @web.middleware
    async def auth(request: web.Request, handler: Callable) -> web.StreamResponse:
        token = state.options.token
        wanted = f"Bearer {token}"
        if (
            token
            and not request.path.startswith("/sim/")
            and (request.headers.get("Authorization", "") != wanted)
        ):
            return hostile.refusal(request, state.options)
        return await handler(request)

    middlewares = [hostile.middleware(lambda: state.options), auth]
    app = web.Application(client_max_size=MAX_UPLOAD_SIZE, middlewares=middlewares)
    for method, path, handler in _routes(state):
        app.router.add_route(method, path, handler)
        app.router.add_route(method, "/api" + path, handler)

    async def sim_state(request: web.Request) -> web.Response:
        running, pending = state.queue.snapshot()
        return web.json_response(
            {
                "options": state.options.to_json(),
                "running": [item[1] for item in running],
                "pending": [item[1] for item in pending],
                "started_prompts": state.started_prompts,
                "models_loaded": state.models.stats()["loaded"],
                "sockets": sorted(state.sockets),
                "platform": platform.platform(),
            }
        )

    async def sim_faults(request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                changes = SimOptions.coerce_changes(await request.json())
                new = apply_faults(changes)
            except (TypeError, ValueError) as ex:
                return web.json_response({"error": str(ex)}, status=400)
            return web.json_response(new.to_json())
        return web.json_response(state.options.to_json())

    async def sim_stats(request: web.Request) -> web.Response:
        return web.json_response(state.stats())

    app.router.add_get("/sim/state", sim_state)
    app.router.add_get("/sim/stats", sim_stats)
    app.router.add_get("/sim/faults", sim_faults)
    app.router.add_post("/sim/faults", sim_faults)
    return app


__all__ = ["SimState", "build_app", "reset_transport"]
