"""Websocket messages bounded in size *before* they are read (websocket-client has no such option).

websocket-client reads a frame's header, then ``recv_strict(length)`` for its payload, whatever the
length says (up to 2**63), and joins a fragmented message by ``bytes +=`` (quadratic time).
:func:`bound_messages` swaps in a frame reader that checks each announced length against the cap
of the whole message (all its fragments) as soon as the header arrives, and a joiner that appends
in place. A message over the cap raises our ProtocolError (``limits.too_large``) without reading its
payload; the reader then refuses every later read too, so the caller can only close the socket
(even websocket-client's own ``close()``, which reads until the peer's close frame, stops at once).
"""

from __future__ import annotations

from typing import Any, Optional

import websocket

from comfy_cluster.core.errors import ProtocolError
from comfy_cluster.core.limits import too_large

__all__ = ["bound_messages"]

_OPCODE = 4  # index of the opcode in websocket-client's frame header tuple
_DATA_OPCODES = (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY)


def bound_messages(ws: Any, limit: int, server: str) -> Any:
    """Make the connected websocket ``ws`` refuse messages over ``limit`` bytes; returns ``ws``.

    Call it before the first read (right after ``create_connection``).
    """
    frames = ws.frame_buffer
    ws.frame_buffer = _BoundedFrames(frames.recv, frames.skip_utf8_validation, limit, server)
    joiner = ws.cont_frame
    ws.cont_frame = _InPlaceJoin(joiner.fire_cont_frame, joiner.skip_utf8_validation)
    return ws


class _BoundedFrames(websocket.frame_buffer):  # type: ignore[misc]
    """websocket-client's frame reader, checking the message size when each header arrives."""

    def __init__(self, recv: Any, skip_utf8_validation: bool, limit: int, server: str) -> None:
        super().__init__(recv, skip_utf8_validation)
        self._limit = limit
        self._server = server
        self._message = 0  # bytes of the current message announced so far
        self._refused: Optional[int] = None  # the announced size that was refused

    def _error(self) -> ProtocolError:
        return too_large(
            "websocket", self._limit, server=self._server, announced=self._refused, noun="message"
        )

    def recv_length(self) -> None:
        super().recv_length()
        opcode = self.header[_OPCODE]
        if opcode == websocket.ABNF.OPCODE_CONT:
            self._message += self.length
            size = self._message
        elif opcode in _DATA_OPCODES:
            self._message = size = self.length
        else:
            size = self.length  # a control frame (at most 125 bytes by the protocol)
        if size > self._limit:
            self._refused = size
            raise self._error()

    def recv_frame(self) -> Any:
        if self._refused is not None:
            raise self._error()  # the stream is mid-payload: nothing after it can be read
        return super().recv_frame()


class _InPlaceJoin(websocket.continuous_frame):  # type: ignore[misc]
    """websocket-client's fragment joiner, appending in place: linear in the message size."""

    def add(self, frame: Any) -> None:
        if not self.cont_data and not frame.fin and frame.opcode in _DATA_OPCODES:
            frame.data = bytearray(frame.data)  # later fragments are appended with +=
        super().add(frame)

    def extract(self, frame: Any) -> tuple:
        opcode, frame = super().extract(frame)
        if isinstance(frame.data, bytearray):
            frame.data = bytes(frame.data)
        return opcode, frame
