"""The uvicorn configuration every server of ours runs with.

Java's ``HttpClient.newHttpClient()`` and ``curl --http2`` offer an upgrade to cleartext HTTP/2 on
plain ``http://``: a POST carrying ``Connection: Upgrade, HTTP2-Settings``, ``Upgrade: h2c`` and a
body. Stock uvicorn with httptools loses that body. llhttp flags any request with an ``Upgrade``
header as an upgrade; httptools then tells llhttp the message has no body, so the app gets an empty
one ("Required body invalid"), and uvicorn drops the bytes after the headers. If the body comes in a
later packet, it is parsed as the next request ("Invalid HTTP request received.").

A server may ignore an ``Upgrade`` it does not support (RFC 9110 7.8, RFC 9113 3.1) and answer over
HTTP/1.1, which is what the client then expects. uvicorn's h11 implementation already does that, so
only the httptools one needs fixing; WebSocket upgrades keep uvicorn's own handling.

The same protocol bounds a request's head, which httptools does not: at most :data:`MAX_HEAD_BYTES` (a
larger head gets 431 and the connection is closed before it costs more memory), received within
:data:`HEAD_TIMEOUT_S` of the connection opening or of the request's first byte (else the connection is
closed). A connection that never sends anything is closed by the same clock; idle keep-alive connections
by uvicorn's own ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

# Hop-by-hop parts of an upgrade offer; once it is declined they must not reach the app (nor the
# re-parse, where they would flag the upgrade again).
_OFFER_HEADERS = frozenset({b"upgrade", b"http2-settings"})

# Far above any real client's head (browsers and SDKs send 1-4 KB; nginx allows 32 KB by default).
MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 10.0
_HEAD_TOO_LARGE_BODY = (
    b'{"code":"RequestHeaderFieldsTooLarge","message":"The request head is larger than 64 KB."}'
)
_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\nconnection: close\r\n"
    + b"content-length: %d\r\n\r\n" % len(_HEAD_TOO_LARGE_BODY)
    + _HEAD_TOO_LARGE_BODY
)


class UpgradeDecliningHttpToolsProtocol(HttpToolsProtocol):
    """httptools protocol that answers a non-WebSocket ``Upgrade`` request as a plain HTTP/1.1 one."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # The head of a declined upgrade request, rebuilt without the offer, waiting to be re-parsed.
        self._declined_head: bytes | None = None
        # Bytes received while the current request's head was incomplete, and the clock on that head.
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_clock()
        super().connection_lost(exc)

    def _start_head_clock(self) -> None:
        if self._head_timer is None:
            self._head_bytes = 0
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_too_slow)

    def _stop_head_clock(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        self.logger.info("closing a connection whose request head took over %.0f s", HEAD_TIMEOUT_S)
        self.transport.close()

    def on_message_begin(self) -> None:
        self._start_head_clock()
        super().on_message_begin()

    def _new_parser(self) -> httptools.HttpRequestParser:
        parser = httptools.HttpRequestParser(self)
        # As uvicorn sets up its own parser.
        parser.set_dangerous_leniencies(lenient_data_after_close=True)
        return parser

    def _declines_upgrade(self) -> bool:
        # llhttp also flags CONNECT as an upgrade; that has no offer to strip and keeps uvicorn's handling.
        return (
            self.parser.should_upgrade()
            and self.parser.get_method() != b"CONNECT"
            and not self._should_upgrade()
        )

    def _head_without_offer(self) -> bytes:
        lines = [
            self.parser.get_method(),
            b" ",
            self.url,
            b" HTTP/",
            self.parser.get_http_version().encode(),
            b"\r\n",
        ]
        for name, value in self.headers:
            if name in _OFFER_HEADERS:
                continue
            if name == b"connection":
                tokens = [t.strip() for t in value.split(b",")]
                value = b", ".join(t for t in tokens if t and t.lower() not in _OFFER_HEADERS)
                if not value:
                    continue
            lines += [name, b": ", value, b"\r\n"]
        lines.append(b"\r\n")
        return b"".join(lines)

    def on_headers_complete(self) -> None:
        self._stop_head_clock()
        if self._declines_upgrade():
            # No request cycle yet: httptools makes llhttp skip the body of an upgrade request, so
            # the request is only started when its head is re-parsed in data_received.
            self._declined_head = self._head_without_offer()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._declined_head is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._declined_head is None:
            super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        while True:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            except httptools.HttpParserUpgrade as exc:
                if self._declined_head is not None:
                    # A fresh parser frames the body (Content-Length or chunked) of the rebuilt
                    # request, from whatever followed the head in this packet or comes later.
                    data = self._declined_head + data[exc.args[0] :]
                    self._declined_head = None
                    self.parser = self._new_parser()
                    continue
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
            break
        if self._head_timer is not None and not self.transport.is_closing():
            # Still inside a head after this packet: everything in it was head.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._stop_head_clock()
                self.transport.write(_HEAD_TOO_LARGE)
                self.transport.close()


def uvicorn_config(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str | int | None = "info",
    **kwargs: Any,
) -> uvicorn.Config:
    """A ``uvicorn.Config`` for ``app`` that keeps the body of h2c upgrade offers; kwargs go to uvicorn.

    uvicorn installs no handlers of its own (``log_config=None``): its loggers propagate to the root logger,
    where ``videosynth.observability.logs.configure_logging`` formats and redacts every line alike. Its access
    log stays off: a line per poll would cost more than the poll (``videosynth.http`` logs requests at DEBUG).
    """
    kwargs.setdefault("log_config", None)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=UpgradeDecliningHttpToolsProtocol,
        access_log=False,
        **kwargs,
    )
