"""`taskgate serve`'s HTTP/1.1 protocol: uvicorn's httptools protocol with a cap on the size of
a request's head (request line and headers). httptools buffers a header whole before handing
it over, so without a cap one 32 MiB `Authorization` header costs 32 MiB and seconds of CPU
before any token check; past the cap the client gets 431 and the connection is closed.

(On AWS, API Gateway refuses heads over 10 KB before a function runs.)
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 32 * 1024


class BoundedHeadProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Still in a head after this chunk: all of it was head (the parser buffers it), unless a
        # pipelined request ended in it too (then the count is high by that request: safe side).
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse()

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def _refuse(self) -> None:
        self.logger.warning("request head over %d bytes: 431", MAX_HEAD_BYTES)
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: %d\r\n"
            b"connection: close\r\n\r\n" % len(self._body()) + self._body()
        )
        self.transport.close()

    @staticmethod
    def _body() -> bytes:
        return (
            b'{"error":"Request header fields too large","details":"The request line and headers may be at most %d bytes"}'
            % MAX_HEAD_BYTES
        )
