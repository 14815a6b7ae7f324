"""Download a reference image without letting the URL reach private networks.

The worker calls :func:`fetch_media` synchronously. Safety comes from three places:

* every TCP connection (first hop and every redirect hop) goes through :class:`_GuardedBackend`, which
  resolves the host itself, refuses if *any* resolved address is not public, and then connects to exactly
  the address it checked, so a DNS answer that changes between check and connect (rebinding) cannot slip
  through;
* every socket read/write/handshake is clamped to one total deadline, because httpx's ``read`` timeout is per
  read and a server dripping one byte at a time would otherwise never time out;
* the body is read raw (no content decoding) and counted, so neither a large body nor a gzip bomb is ever
  held in memory beyond ``max_bytes`` plus one network read;
* a download can be called off (a canceled task): resolving, connecting and every read wait in slices of
  :data:`CANCEL_CHECK_S` and raise :class:`~videosynth.errors.Canceled` when ``should_stop`` says so.

:func:`post_guarded` delivers a webhook over the same guarded connections and deadline; it reports what
became of the delivery instead of raising, since a failed delivery is an outcome to record, not a fault.
"""

from __future__ import annotations

import base64
import binascii
import errno
import functools
import ipaddress
import math
import os
import re
import select
import socket
import ssl
import threading
import time
import typing
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpcore
import httpx
from httpcore._backends.sync import SyncStream

from videosynth.errors import (
    Canceled,
    ForbiddenAddress,
    InvalidImageFormat,
    InvalidImageSize,
    MediaConnectionRefused,
    MediaDownloadFailed,
    MediaTimeout,
)
from videosynth.media.addresses import is_public

__all__ = [
    "FetchPolicy",
    "PostOutcome",
    "delivery_host_forbidden",
    "fetch_media",
    "is_forbidden_address",
    "parse_data_url",
    "post_guarded",
    "validate_delivery_url",
]

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
_MAX_URL_IN_MESSAGE = 200
_USER_AGENT = "videosynth-media-fetch/1.0"
# How long a download may go on after it was called off.
CANCEL_CHECK_S = 0.1
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DATA_URL_MIMES = {
    "image/jpeg": "image/jpeg",
    "image/jpg": "image/jpeg",
    "image/png": "image/png",
    "image/webp": "image/webp",
}


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one download; build it from settings once and pass it to :func:`fetch_media`."""

    allow_private: bool = False  # VIDEOSYNTH_MEDIA_ALLOW_PRIVATE; True only for tests/dev
    max_bytes: int = DEFAULT_MAX_BYTES
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 30.0  # whole download incl. redirects; a slow drip must trip this
    max_redirects: int = 3


# ------------------------------------------------------------------------------------------------------------
# Address policy
# ------------------------------------------------------------------------------------------------------------


def is_forbidden_address(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Return True when ``address`` is not a publicly routable unicast address.

    Pure function, no I/O; the rule is :func:`videosynth.media.addresses.is_public` (the IANA
    special-purpose registries). Strings may be bracketed (``"[::1]"``) and carry a zone id
    (``"fe80::1%eth0"``).

    Raises ValueError when ``address`` is a string that is not an IP address literal (e.g. a hostname).
    """
    if isinstance(address, str):
        text = address.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        text = text.split("%", 1)[0]  # zone id: irrelevant to routability, and "%25eth0" URL forms exist
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(text)
    else:
        ip = address
    return not is_public(ip)


# ------------------------------------------------------------------------------------------------------------
# Messages
# ------------------------------------------------------------------------------------------------------------

_USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#]*@")


def _short_url(url: str) -> str:
    """The URL as it may appear in an error message: no data: payload, no credentials, bounded length."""
    if url[:5].lower() == "data:":
        head = url.split(",", 1)[0]
        return f"{head[:60]},... ({len(url)} characters)"
    url = _USERINFO_RE.sub(r"\1", url)
    # Control characters would let a crafted URL forge log lines.
    url = "".join(ch if ch.isprintable() else "?" for ch in url[: _MAX_URL_IN_MESSAGE + 1])
    if len(url) > _MAX_URL_IN_MESSAGE:
        url = url[:_MAX_URL_IN_MESSAGE] + "..."
    return url


def _size_limit_text(max_bytes: int) -> str:
    mb = max_bytes / (1024 * 1024)
    return f"{mb:g}MB" if mb >= 1 else f"{max_bytes} bytes"


def _too_large(max_bytes: int, detail: str) -> InvalidImageSize:
    return InvalidImageSize(
        f"Invalid file size. The image file size must be less than {_size_limit_text(max_bytes)}, {detail}."
    )


# ------------------------------------------------------------------------------------------------------------
# data: URLs
# ------------------------------------------------------------------------------------------------------------


def parse_data_url(url: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[str, bytes]:
    """Decode a base64 ``data:`` URL carrying an image.

    Returns ``(mime, payload)`` where ``mime`` is normalised to ``image/jpeg``, ``image/png`` or
    ``image/webp`` (``image/jpg`` is accepted as an alias). Raises InvalidImageFormat for a non-data URL,
    another MIME type, a non-base64 encoding, invalid base64 or an empty payload, and InvalidImageSize when
    the decoded payload would exceed ``max_bytes`` (judged from the encoded length first, so a huge URL is
    never decoded).
    """
    if url[:5].lower() != "data:":
        raise InvalidImageFormat("Invalid data URL, it must start with 'data:'.")
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise InvalidImageFormat("Invalid data URL, the ',' separating the header from the data is missing.")
    parts = [p.strip() for p in header.split(";")]
    mime = parts[0].lower()
    if mime not in _DATA_URL_MIMES:
        raise InvalidImageFormat(
            f"Invalid file format, the image must be JPEG, PNG or WEBP, got data URL type {mime[:50]!r}."
        )
    if len(parts) < 2 or parts[-1].lower() != "base64":
        raise InvalidImageFormat("Invalid data URL, the image data must be base64 encoded (';base64,').")

    # Base64 turns 3 bytes into 4 characters; allow some room for line breaks before stripping them, so an
    # oversized URL is refused without building further copies of it.
    encoded_cap = 4 * -(-max_bytes // 3)
    if len(payload) > encoded_cap + encoded_cap // 20 + 64:
        raise _too_large(max_bytes, f"got a data URL of {len(payload)} characters")
    if "%" in payload:
        payload = urllib.parse.unquote(payload)
    payload = "".join(payload.split())
    if len(payload) > encoded_cap:
        raise _too_large(max_bytes, f"got about {len(payload) * 3 // 4} bytes of base64 data")
    if not payload:
        raise InvalidImageFormat("Invalid data URL, the image data is empty.")
    payload += "=" * (-len(payload) % 4)  # some encoders drop the padding
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImageFormat("Invalid data URL, the image data is not valid base64.") from exc
    if len(data) > max_bytes:
        raise _too_large(max_bytes, f"got {len(data)} bytes")
    return _DATA_URL_MIMES[mime], data


# ------------------------------------------------------------------------------------------------------------
# Guarded network backend
# ------------------------------------------------------------------------------------------------------------


class _ConnectionRefused(httpcore.ConnectError):
    """The target refused the connection (httpcore keeps no cause to tell it from other connect errors)."""


class _ForbiddenTarget(Exception):
    """Raised inside the transport; fetch_media turns it into ForbiddenAddress with the hop's URL."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} resolves to {address}")
        self.host = host
        self.address = address


def _remaining(deadline: float, timeout: float | None, exc_cls: type[Exception]) -> float:
    """The timeout to use for one socket operation so that it cannot outlive the total deadline."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise exc_cls("total download deadline exceeded")
    return remaining if timeout is None else min(timeout, remaining)


def _never() -> bool:
    return False


class _DeadlineStream(httpcore.NetworkStream):
    """Wraps a connected stream so every read, write and TLS handshake respects the total deadline, and a
    read waits in slices so a download that was called off stops within :data:`CANCEL_CHECK_S`."""

    def __init__(
        self, inner: httpcore.NetworkStream, deadline: float, should_stop: typing.Callable[[], bool]
    ) -> None:
        self._inner = inner
        self._deadline = deadline
        self._should_stop = should_stop

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        budget = _remaining(self._deadline, timeout, httpcore.ReadTimeout)
        give_up = time.monotonic() + budget
        while True:
            if self._should_stop():
                raise Canceled()
            left = give_up - time.monotonic()
            if left <= 0:
                raise httpcore.ReadTimeout("timed out")
            try:
                # A timed-out recv consumed nothing (TLS included), so the read can simply be tried again.
                return self._inner.read(max_bytes, min(CANCEL_CHECK_S, left))
            except httpcore.ReadTimeout:
                continue

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _remaining(self._deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # httpcore passes the URL's hostname here (not the IP we connected to), so SNI and certificate
        # verification still use the name the user gave.
        budget = _remaining(self._deadline, timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, budget), self._deadline, self._should_stop
        )

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


def _resolve(
    host: str, port: int, timeout: float, should_stop: typing.Callable[[], bool] = _never
) -> list[str]:
    """getaddrinfo with a timeout; returns the distinct addresses in resolver order."""
    # getaddrinfo cannot be interrupted, so it runs in a daemon thread we may abandon; a hung resolver then
    # costs one parked thread instead of blocking the worker past its deadline.
    box: dict[str, typing.Any] = {}

    def run() -> None:
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name="videosynth-dns", daemon=True)
    thread.start()
    give_up = time.monotonic() + timeout
    while thread.is_alive() and time.monotonic() < give_up:
        if should_stop():
            raise Canceled()
        thread.join(min(CANCEL_CHECK_S, max(0.0, give_up - time.monotonic())))
    if thread.is_alive():
        raise httpcore.ConnectTimeout(f"resolving {host} timed out")
    if "error" in box:
        raise httpcore.ConnectError(f"cannot resolve host {host}: {box['error']}") from box["error"]
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in box["infos"]:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise httpcore.ConnectError(f"cannot resolve host {host}: no addresses")
    return addresses


class _GuardedBackend(httpcore.SyncBackend):
    """httpcore backend that checks every address before connecting, then connects to that very address."""

    def __init__(
        self, *, allow_private: bool, deadline: float, should_stop: typing.Callable[[], bool]
    ) -> None:
        self._allow_private = allow_private
        self._deadline = deadline
        self._should_stop = should_stop

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        budget = _remaining(self._deadline, timeout, httpcore.ConnectTimeout)
        addresses = _resolve(host, port, budget, self._should_stop)
        if not self._allow_private:
            # All of them, not just the first: the OS or a later retry might pick any of the answers.
            for address in addresses:
                if is_forbidden_address(address):
                    raise _ForbiddenTarget(host, address)
        last_error: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                # Connecting to the IP literal we checked, never to the name (which could resolve anew).
                sock = self._connect(
                    address, port, _remaining(self._deadline, timeout, httpcore.ConnectTimeout)
                )
            except httpcore.ConnectError as exc:
                last_error = exc
                continue
            for option in socket_options or ():
                sock.setsockopt(*option)
            return _DeadlineStream(SyncStream(sock), self._deadline, self._should_stop)
        assert last_error is not None
        raise last_error

    def _connect(self, address: str, port: int, timeout: float) -> socket.socket:
        """A connected blocking socket, waiting in slices so a called-off download stops connecting."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            status = sock.connect_ex((address, port))
            give_up = time.monotonic() + timeout
            while status in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
                if self._should_stop():
                    raise Canceled()
                left = give_up - time.monotonic()
                if left <= 0:
                    raise httpcore.ConnectTimeout("timed out")
                _, writable, _ = select.select([], [sock], [], min(CANCEL_CHECK_S, left))
                if writable:
                    status = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if status == errno.ECONNREFUSED:
                raise _ConnectionRefused(os.strerror(status))
            if status != 0:
                raise httpcore.ConnectError(os.strerror(status))
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except BaseException:
            sock.close()
            raise


class _GuardedTransport(httpx.HTTPTransport):
    """An ``httpx.HTTPTransport`` whose connection pool uses :class:`_GuardedBackend`.

    HTTPTransport has no parameter for an httpcore network backend, yet its ``handle_request`` (request
    conversion and httpcore -> httpx exception mapping) is exactly what we want to keep. Replacing ``_pool``
    after construction is the smallest reach into internals; a hand-written BaseTransport would have to copy
    that private exception mapping instead. httpx is pinned to 0.28.1, and the zero-connection tests fail
    loudly if a future httpx stops using ``_pool``.
    """

    def __init__(self, backend: httpcore.NetworkBackend, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False, retries=0)
        unused_pool = self._pool
        if not isinstance(unused_pool, httpcore.ConnectionPool):  # pragma: no cover - httpx internals changed
            raise RuntimeError("httpx.HTTPTransport no longer keeps an httpcore.ConnectionPool in _pool")
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=4,
            max_keepalive_connections=2,
            retries=0,
            network_backend=backend,
        )
        unused_pool.close()


# ------------------------------------------------------------------------------------------------------------
# fetch
# ------------------------------------------------------------------------------------------------------------


def _connection_refused(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (ConnectionRefusedError, _ConnectionRefused)):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _netloc(url: httpx.URL) -> str:
    return _short_url(url.netloc.decode("ascii", "replace"))


def _refuse_encoded(response: httpx.Response, short: str) -> None:
    encodings = [
        token.strip().lower()
        for value in response.headers.get_list("content-encoding")
        for token in value.split(",")
    ]
    if any(token not in ("", "identity") for token in encodings):
        # httpx would decompress in one go, before any size check (a 50 KB gzip can become 50 MB).
        raise MediaDownloadFailed(
            f"Failed to download {short}: the server sent a compressed response "
            f"(Content-Encoding: {', '.join(encodings)[:50]}) although identity was requested."
        )


def _read_body(
    response: httpx.Response,
    policy: FetchPolicy,
    deadline: float,
    short: str,
    sink: typing.Callable[[bytes], object] | None = None,
) -> bytes:
    """The body, capped and under the deadline; with ``sink``, each chunk goes there instead (b"" back)."""
    declared = response.headers.get("content-length")
    if declared is not None:
        try:
            declared_size = int(declared)
        except ValueError:
            declared_size = -1  # h11 refuses malformed lengths itself; counting below still applies
        if declared_size > policy.max_bytes:
            raise _too_large(policy.max_bytes, f"the server announced {declared_size} bytes for {short}")
    body = bytearray()
    received = 0
    for chunk in response.iter_raw():
        received += len(chunk)
        if received > policy.max_bytes:
            raise _too_large(policy.max_bytes, f"got more than {policy.max_bytes} bytes from {short}")
        if time.monotonic() > deadline:
            raise MediaTimeout(f"Download {short} timeout, please check network connection.")
        if sink is None:
            body += chunk
        else:
            sink(chunk)
    return bytes(body)


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes ~45 ms; one context serves every download (SSLContext is thread-safe).
    return httpx.create_ssl_context(trust_env=False)


def warm_up() -> None:
    """Pay the one-off costs of the first download (CA bundle, Pillow's format plugins) before any task.

    Measured on the first task after start: about 80 ms more than on the next ones."""
    from PIL import Image

    _ssl_context()
    Image.init()


def _fetch_http(
    url: str,
    policy: FetchPolicy,
    should_stop: typing.Callable[[], bool],
    sink: typing.Callable[[bytes], object] | None = None,
    accept: str = "image/*,*/*;q=0.8",
) -> bytes:
    deadline = time.monotonic() + policy.total_timeout
    backend = _GuardedBackend(allow_private=policy.allow_private, deadline=deadline, should_stop=should_stop)
    transport = _GuardedTransport(backend, _ssl_context())
    timeout = httpx.Timeout(
        connect=policy.connect_timeout,
        read=policy.read_timeout,
        write=policy.read_timeout,
        pool=policy.connect_timeout,
    )
    headers = {"Accept-Encoding": "identity", "Accept": accept, "User-Agent": _USER_AGENT}
    # trust_env=False: proxy environment variables would send the request to a proxy, around the address
    # check.
    with httpx.Client(
        transport=transport, trust_env=False, timeout=timeout, follow_redirects=False, headers=headers
    ) as client:
        current = url
        redirects = 0
        while True:
            short = _short_url(current)
            try:
                target = httpx.URL(current)
            except (httpx.InvalidURL, ValueError, TypeError) as exc:
                raise MediaDownloadFailed(f"Failed to download {short}: invalid URL ({exc}).") from exc
            if target.scheme not in ("http", "https"):
                raise MediaDownloadFailed(
                    f"Failed to download {short}: only http and https URLs can be downloaded."
                )
            if not target.host:
                raise MediaDownloadFailed(f"Failed to download {short}: the URL has no host.")
            if time.monotonic() >= deadline:
                raise MediaTimeout(f"Download {short} timeout, please check network connection.")
            try:
                with client.stream("GET", target) as response:
                    if response.status_code in _REDIRECT_STATUSES:
                        location = response.headers.get("location")
                        if not location:
                            raise MediaDownloadFailed(
                                f"Failed to download {short}: HTTP {response.status_code} without a Location."
                            )
                        redirects += 1
                        if redirects > policy.max_redirects:
                            raise MediaDownloadFailed(
                                f"Failed to download {_short_url(url)}: more than {policy.max_redirects} "
                                "redirects."
                            )
                        # join() resolves relative Locations against the hop that sent them.
                        current = str(response.url.join(location))
                        continue
                    if not 200 <= response.status_code < 300:
                        raise MediaDownloadFailed(f"Failed to download {short}: HTTP {response.status_code}")
                    _refuse_encoded(response, short)
                    return _read_body(response, policy, deadline, short, sink)
            except _ForbiddenTarget as exc:
                raise ForbiddenAddress(
                    f"The media URL {short} resolves to {exc.address}, which is not a public address."
                ) from None
            except httpx.TimeoutException as exc:
                raise MediaTimeout(f"Download {short} timeout, please check network connection.") from exc
            except httpx.ConnectError as exc:
                if _connection_refused(exc):
                    raise MediaConnectionRefused(
                        f"Connection to {_netloc(target)} refused, please provide available URL."
                    ) from exc
                raise MediaDownloadFailed(f"Failed to download {short}: {str(exc)[:200]}") from exc
            except httpx.InvalidURL as exc:
                raise MediaDownloadFailed(f"Failed to download {short}: invalid redirect ({exc}).") from exc
            except httpx.HTTPError as exc:
                reason = str(exc)[:200] or type(exc).__name__
                raise MediaDownloadFailed(f"Failed to download {short}: {reason}") from exc


def fetch_media(url: str, policy: FetchPolicy, should_stop: typing.Callable[[], bool] = _never) -> bytes:
    """Return the bytes behind a reference-image URL.

    ``http``/``https`` URLs are downloaded under ``policy`` (address check on every hop, at most
    ``max_redirects`` redirects, ``max_bytes`` cap, total deadline); ``data:`` URLs are decoded with
    :func:`parse_data_url`. The bytes are not validated as an image; see ``videosynth.media.validate``.

    Raises ForbiddenAddress, MediaConnectionRefused, MediaTimeout or MediaDownloadFailed (the base of the
    other three; also for other schemes, HTTP errors and too many redirects), InvalidImageSize, or
    InvalidImageFormat (bad data: URL); Canceled within :data:`CANCEL_CHECK_S` of ``should_stop()``
    turning true.
    """
    text = url.strip() if isinstance(url, str) else ""
    if not text:
        raise MediaDownloadFailed("Failed to download the media: the URL is empty.")
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    if scheme == "data":
        _mime, data = parse_data_url(text, max_bytes=policy.max_bytes)
        return data
    if scheme not in ("http", "https"):
        raise MediaDownloadFailed(
            f"Failed to download {_short_url(text)}: unsupported URL scheme, use http, https or data."
        )
    return _fetch_http(text, policy, should_stop)


def fetch_to_file(
    url: str,
    policy: FetchPolicy,
    destination: Path,
    should_stop: typing.Callable[[], bool] = _never,
    accept: str = "*/*",
) -> int:
    """Download an ``http``/``https`` URL into ``destination`` under ``policy`` (the same address checks,
    redirects, cap and deadline as :func:`fetch_media`, streamed to disk instead of held in memory) and
    return its size. A failed download leaves no file. Raises what :func:`fetch_media` raises."""
    text = url.strip()
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    if scheme not in ("http", "https"):
        raise MediaDownloadFailed(f"Failed to download {_short_url(text)}: only http and https URLs.")
    try:
        with destination.open("wb") as out:
            _fetch_http(text, policy, should_stop, sink=out.write, accept=accept)
            return out.tell()
    except BaseException:
        destination.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------------------------
# Webhook delivery
# ------------------------------------------------------------------------------------------------------------

_WEBHOOK_USER_AGENT = "videosynth-webhooks/1.0"
MAX_DELIVERY_URL = 2048
_MAX_OUTCOME_ERROR = 300
# Small enough that one send() nearly always takes a whole piece, so a write ends close to the deadline.
_WRITE_PIECE = 16 * 1024
# The numeric IPv4 spellings inet_aton (and so getaddrinfo) accepts: 127.1, 0x7f.0.0.1, 017700000001.
_LEGACY_IPV4_RE = re.compile(r"(?:0[xX][0-9a-fA-F]+|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]+|[0-9]+)){0,3}")


@dataclass(frozen=True)
class PostOutcome:
    """What became of one :func:`post_guarded` delivery."""

    status_code: int | None  # the HTTP status the receiver answered, None when no answer came
    error: str | None  # None on a 2xx; otherwise a short reason (at most 300 characters) for logs and records

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def validate_delivery_url(url: str) -> str | None:
    """None when ``url`` is acceptable as a webhook target, else why not (a short message).

    Acceptable: http or https, a host, no user name or password, a port in 1-65535 if one is given, at most
    :data:`MAX_DELIVERY_URL` characters, no whitespace or control characters. Syntax only: whether the host
    is a public address is decided when :func:`post_guarded` connects (see also
    :func:`delivery_host_forbidden`).
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    if not url:
        return "the URL is empty"
    if len(url) > MAX_DELIVERY_URL:
        return f"the URL is longer than {MAX_DELIVERY_URL} characters"
    # httpx percent-encodes a space in the host or path instead of refusing it, and a stored URL with
    # invisible characters cannot be told apart from the one its owner meant.
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "the URL contains whitespace or control characters"
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        return _outcome_text(f"the URL cannot be parsed ({exc})")
    if parsed.scheme not in ("http", "https"):
        return "only http and https URLs are accepted"
    if not parsed.host:
        return "the URL has no host"
    # An empty userinfo ("http://@host/") parses to b"", so the raw text is checked too.
    if parsed.userinfo or _USERINFO_RE.match(url):
        return "the URL must not contain a user name or password"
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        return "the URL's port must be between 1 and 65535"
    return None


def delivery_host_forbidden(host: str) -> bool:
    """True when ``host`` is an IP address literal that :func:`is_forbidden_address` refuses.

    Takes a URL's host: IPv4, IPv6 with or without brackets (a zone id is allowed), or a name. Names give
    False: what they resolve to is checked when :func:`post_guarded` connects. The legacy numeric IPv4
    spellings (``127.1``, ``0x7f.0.0.1``, ``2130706433``) count as literals, because the resolver reads them
    as addresses. Pure, no I/O.
    """
    text = host.strip()
    try:
        return is_forbidden_address(text)
    except ValueError:
        pass
    if _LEGACY_IPV4_RE.fullmatch(text):
        try:
            packed = socket.inet_aton(text)
        except OSError:  # e.g. a part out of range; then the resolver will not read it as an address either
            return False
        return is_forbidden_address(ipaddress.IPv4Address(packed))
    return False


def _outcome_text(text: str) -> str:
    # Outcomes end up in delivery records and logs: one line, bounded, whatever a host or server put in it.
    text = "".join(ch if ch.isprintable() else "?" for ch in text[: _MAX_OUTCOME_ERROR + 1])
    if len(text) > _MAX_OUTCOME_ERROR:
        text = text[: _MAX_OUTCOME_ERROR - 3] + "..."
    return text


class _SlicedWrites(httpcore.NetworkStream):
    """Writes a buffer in pieces, each under the time left before the deadline.

    :class:`_DeadlineStream` clamps each write call, but the socket layer then sends that call's buffer in as
    many send()s as the receiver's window asks for, each allowed the whole clamp; a receiver reading a large
    body slowly could so stretch one write well past the deadline. A download writes only a request head, so
    only deliveries need this."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), _WRITE_PIECE):
            self._inner.write(buffer[start : start + _WRITE_PIECE], timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _SlicedWrites(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _DeliveryBackend(_GuardedBackend):
    """:class:`_GuardedBackend` (same address check, same deadline) whose streams also slice writes."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _SlicedWrites(super().connect_tcp(host, port, timeout, local_address, socket_options))


def _discard_body(response: httpx.Response, max_bytes: int) -> None:
    # Reading some of the body lets a receiver that writes its answer before closing finish cleanly; raw, so
    # a compressed body is never inflated, and dropped chunk by chunk, so nothing beyond one read is held.
    if max_bytes <= 0:
        return
    received = 0
    for chunk in response.iter_raw():
        received += len(chunk)
        if received >= max_bytes:
            return


def _seconds_text(seconds: float) -> str:
    return str(round(float(seconds), 3))


def _failure_text(exc: Exception, timeout_s: float) -> str:
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return f"timed out after {_seconds_text(timeout_s)} s"
    if _connection_refused(exc):
        return "connection refused"
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return _outcome_text(f"cannot connect: {reason}")
    return _outcome_text(f"request failed: {reason}")


def _status_outcome(status: int) -> PostOutcome:
    if 200 <= status < 300:
        return PostOutcome(status, None)
    if 300 <= status < 400:
        return PostOutcome(status, f"redirects are not followed (HTTP {status})")
    return PostOutcome(status, f"HTTP {status}")


def post_guarded(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    allow_private: bool,
    timeout_s: float,
    max_response_bytes: int = 64 * 1024,
) -> PostOutcome:
    """POST ``body`` to ``url`` once (a webhook delivery) and say what became of it.

    The rules of :func:`fetch_media` apply: the URL must pass :func:`validate_delivery_url`; every address
    the host resolves to must be public unless ``allow_private``, and the connection goes to the address
    that was checked; no proxies. ``timeout_s`` bounds the whole exchange (resolve, connect, TLS, sending,
    reading the answer), however slowly the receiver answers. A redirect is not followed: a 3xx is a failure.
    At most about ``max_response_bytes`` of the response body are read, raw, and thrown away. ``headers``
    are sent as given; a ``User-Agent`` of ``videosynth-webhooks/1.0`` is added unless they carry one.

    Never raises for network or HTTP trouble (that is the returned :class:`PostOutcome`); raises TypeError
    or ValueError for arguments no call should pass (a non-bytes body, a non-positive timeout).
    """
    if not isinstance(body, bytes):
        raise TypeError(f"body must be bytes, not {type(body).__name__}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)):
        raise TypeError(f"timeout_s must be a number, not {type(timeout_s).__name__}")
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    if max_response_bytes < 0:
        raise ValueError(f"max_response_bytes must not be negative, got {max_response_bytes!r}")
    problem = validate_delivery_url(url)
    if problem is not None:
        return PostOutcome(None, _outcome_text(f"invalid URL: {problem}"))

    deadline = time.monotonic() + timeout_s
    backend = _DeliveryBackend(allow_private=allow_private, deadline=deadline, should_stop=_never)
    transport = _GuardedTransport(backend, _ssl_context())
    # The backend clamps every operation to the deadline; these only keep httpx's own defaults out of it.
    timeout = httpx.Timeout(timeout_s)
    defaults = {"User-Agent": _WEBHOOK_USER_AGENT, "Accept-Encoding": "identity"}
    status: int | None = None
    try:
        # trust_env=False: proxy environment variables would send the request to a proxy, around the address
        # check. Headers given per request replace the client's defaults by name, case-insensitively.
        with (
            httpx.Client(
                transport=transport,
                trust_env=False,
                timeout=timeout,
                follow_redirects=False,
                headers=defaults,
            ) as client,
            client.stream("POST", url, content=body, headers=headers) as response,
        ):
            status = response.status_code
            _discard_body(response, max_response_bytes)
    except _ForbiddenTarget as exc:
        return PostOutcome(
            None, _outcome_text(f"{exc.host} resolves to {exc.address}, which is not a public address")
        )
    except (httpx.HTTPError, OSError) as exc:
        # Once the status line is in, the receiver has answered; a body that stalls or breaks off after it
        # (cut at the deadline all the same) changes nothing about the outcome.
        if status is None:
            return PostOutcome(None, _failure_text(exc, timeout_s))
    assert status is not None
    return _status_outcome(status)
