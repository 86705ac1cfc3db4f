"""What a visitor's requests may carry, checked in front of gradio's routes (`RequestBounds`, an ASGI middleware).

gradio's upload route (`/gradio_api/upload`) keeps whatever it is sent, as long as its cache lives. Here each
visitor may upload at most `visitor_uploads` files and `visitor_upload_bytes` bytes within `upload_seconds`, and the
uploads kept on disk, every visitor's together, stay under `upload_total_bytes`. Bytes and files are counted as they
arrive, whatever the request's headers declare (a chunked request declares no length). An upload over a bound is
refused in one line, 429 for the visitor's bounds and 413 for the server's, and gradio's parser removes what it had
written of it; so does an upload whose sender goes away part-way. Uploads are removed `upload_seconds` after they
arrive (results stay `result_seconds`), unless an analysis is reading them (`UploadLedger.using`). The Live tab's
microphone uploads a chunk of sound (one small `audio.wav`) every fraction of a second: such a chunk counts in its
visitor's bytes but not among their files, and is removed as soon as a live session has read it
(`UploadLedger.consume`), or after `SOUND_CHUNK_SECONDS` (gradio drops the chunks of a stream that come while the server
is busy with the one before: those are never read).

Every other request carries at most `MAX_REQUEST_BYTES` and names no file by a link: gradio would download a linked
file into its cache, whatever its size, outside these bounds. The screen-recording route, which the page does not
use, is refused: gradio keeps each file sent to it in the system's temporary folder for good.

A visitor is the connection's address (which uvicorn already takes from `X-Forwarded-For` when the connection
comes from an address of its `FORWARDED_ALLOW_IPS`, 127.0.0.1 by default). Behind `proxy_hops` proxies (a Space: 1),
it is the address the outermost of them saw: the `proxy_hops`-th from the end of `X-Forwarded-For`, since each
proxy appends to what it was sent and whatever a visitor writes there comes before.
"""

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .settings import AppSettings

logger = logging.getLogger(__name__)

UPLOAD_ROUTE = "/gradio_api/upload"
REFUSED_ROUTES = ("/gradio_api/process_recording",)
# The page's requests carry a few hundred bytes of JSON.
MAX_REQUEST_BYTES = 1 << 20
# Seconds between two removals of stale uploads.
PRUNE_SECONDS = 30
# A chunk of the Live tab's microphone, as gradio's page uploads it; the largest taken is 5 s of 48 kHz stereo 16-bit
# PCM (a chunk is a fraction of a second).
SOUND_CHUNK_NAME = "audio.wav"
MAX_SOUND_CHUNK_BYTES = 1 << 20
# Seconds a chunk of sound that no live session read is kept.
SOUND_CHUNK_SECONDS = 30


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str
    retry_after: int | None = None

    async def send(self, send: Send) -> None:
        body = self.message.encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        if self.retry_after is not None:
            headers.append((b"retry-after", str(self.retry_after).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@dataclass(eq=False)
class Upload:
    """One upload request as it arrives: its visitor, and the bytes and files (multipart parts) read so far."""

    visitor: str
    bytes: int = 0
    files: int = 0


class UploadLedger:
    """The uploads of every visitor: those arriving, the recent ones (per visitor, within the window) and those kept
    on disk; `refusal(upload)` says whether an arriving upload passes a bound. Thread-safe."""

    def __init__(self, settings: AppSettings):
        self.settings = settings
        self._lock = threading.Lock()
        self._arriving: set[Upload] = set()
        self._recent: dict[str, deque[tuple[float, int, int]]] = defaultdict(deque)  # (time, bytes, files)
        self._kept: dict[Path, tuple[float, int]] = {}  # (time, bytes)
        self._kept_bytes = 0
        self._in_use: Counter[Path] = Counter()
        self._protected: set[Path] = set()

    def protect(self, paths: Iterable[str]) -> None:
        """Files of the app's own in gradio's cache (its examples), never removed: an upload of the same bytes
        under the same name is stored at the same path."""
        self._protected.update(Path(path) for path in paths)

    def begin(self, visitor: str) -> Upload:
        self.prune()
        upload = Upload(visitor)
        with self._lock:
            self._arriving.add(upload)
        return upload

    def refusal(self, upload: Upload) -> Refusal | None:
        """The bound `upload` passes with what it has read so far (one file at least), if any."""
        settings = self.settings
        with self._lock:
            recent = self._recent.get(upload.visitor, ())
            mine = [other for other in self._arriving if other.visitor == upload.visitor]
            files = sum(entry[2] for entry in recent) + sum(max(other.files, 1) for other in mine)
            sent = sum(entry[1] for entry in recent) + sum(other.bytes for other in mine)
            total = self._kept_bytes + sum(other.bytes for other in self._arriving)
            wait = max(1, math.ceil(recent[0][0] + settings.upload_seconds - time.time())) if recent else None
        window = _duration(settings.upload_seconds)
        if files > settings.visitor_uploads:
            return Refusal(429, f"Too many uploads: at most {settings.visitor_uploads} files per {window}.", wait)
        if sent > settings.visitor_upload_bytes:
            return Refusal(
                429, f"Too much uploaded: at most {_megabytes(settings.visitor_upload_bytes)} per {window}.", wait
            )
        if total > settings.upload_total_bytes:
            return Refusal(413, "The server holds too many uploads right now; try again in a few minutes.")
        return None

    def finish(self, upload: Upload, stored: list[str]) -> None:
        """`upload` has ended; `stored`: the files gradio kept of it (none when it was refused or failed)."""
        now = time.time()
        kept = {}
        for name in stored:
            with contextlib.suppress(OSError):
                kept[Path(name)] = Path(name).stat().st_size
        files = len(stored) - sum(is_sound_chunk(path, size) for path, size in kept.items())
        with self._lock:
            self._arriving.discard(upload)
            if stored:
                self._recent[upload.visitor].append((now, upload.bytes, files))
            for path, size in kept.items():
                self._forget(path)
                self._kept[path] = (now, size)
                self._kept_bytes += size

    def prune(self) -> None:
        """Forgets the uploads past the window, and removes the kept ones that arrived `upload_seconds` ago and
        that no analysis is reading (and forgets those gradio removed)."""
        now = time.time()
        with self._lock:
            for visitor in list(self._recent):
                recent = self._recent[visitor]
                while recent and now - recent[0][0] > self.settings.upload_seconds:
                    recent.popleft()
                if not recent:
                    del self._recent[visitor]
            stale = [
                path
                for path, (arrived, size) in self._kept.items()
                if now - arrived
                > (SOUND_CHUNK_SECONDS if is_sound_chunk(path, size) else self.settings.upload_seconds)
                and not self._in_use[path]
            ]
            gone = [path for path in self._kept if not path.exists()]
            for path in {*stale, *gone}:
                self._forget(path)
        for path in stale:
            if path not in self._protected:
                path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    path.parent.rmdir()  # gradio's folder for the upload, named after its hash: empty now

    def consume(self, path: str) -> None:
        """A chunk of sound a live session has read: removed now."""
        key = Path(path)
        with self._lock:
            kept = self._kept.get(key)
            if kept is None or not is_sound_chunk(key, kept[1]) or self._in_use[key] or key in self._protected:
                return
            self._forget(key)
        key.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            key.parent.rmdir()

    def kept_bytes(self) -> int:
        with self._lock:
            return self._kept_bytes

    @contextlib.contextmanager
    def using(self, path: str) -> Iterator[None]:
        """`path` is not removed inside the block (an analysis reads it)."""
        key = Path(path)
        with self._lock:
            self._in_use[key] += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_use[key] -= 1
                if not self._in_use[key]:
                    del self._in_use[key]

    @contextlib.asynccontextmanager
    async def pruning(self, app) -> AsyncIterator[None]:
        """The server's lifespan: stale uploads are removed every `PRUNE_SECONDS` while it serves."""

        async def prune_forever() -> None:
            while True:
                await asyncio.sleep(PRUNE_SECONDS)
                await asyncio.to_thread(self.prune)

        task = asyncio.create_task(prune_forever())
        try:
            yield
        finally:
            task.cancel()

    def _forget(self, path: Path) -> None:
        """Drops `path` from the kept uploads (the lock held)."""
        if path in self._kept:
            self._kept_bytes -= self._kept.pop(path)[1]


def is_sound_chunk(path: Path, size: int) -> bool:
    """Whether an upload is a chunk of the Live tab's microphone (by its name and size: see the module docstring)."""
    return path.name == SOUND_CHUNK_NAME and size <= MAX_SOUND_CHUNK_BYTES


def visitor_address(scope: Scope, proxy_hops: int) -> str:
    """Who sent a request: see the module's docstring."""
    client = scope.get("client")
    address = client[0] if client else "unknown"
    if proxy_hops:
        forwarded = [
            part.strip()
            for value in Headers(scope=scope).getlist("x-forwarded-for")
            for part in value.split(",")
            if part.strip()
        ]
        if forwarded:
            address = forwarded[-min(proxy_hops, len(forwarded))]
    return address


class RequestBounds:
    """The ASGI middleware in front of gradio's routes: see the module's docstring."""

    def __init__(self, app: ASGIApp, ledger: UploadLedger):
        self.app, self.ledger = app, ledger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
        elif scope["path"].endswith(UPLOAD_ROUTE):
            await self._upload(scope, receive, send)
        elif scope["path"].endswith(REFUSED_ROUTES):
            await Refusal(404, "Not Found").send(send)
        else:
            await self._request(scope, receive, send)

    async def _upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        visitor = visitor_address(scope, self.ledger.settings.proxy_hops)
        upload = self.ledger.begin(visitor)
        parts = _PartCounter(Headers(scope=scope).get("content-type", ""))
        refused: list[Refusal] = []
        response = _HeldResponse()
        drained = False

        async def counted() -> Message:
            nonlocal drained
            message = await receive()
            if message["type"] == "http.disconnect":
                raise MultiPartException("the upload was interrupted")  # gradio's parser removes its files
            body = message.get("body", b"")
            upload.bytes += len(body)
            upload.files = parts.feed(body)
            drained = not message.get("more_body", False)
            if refusal := self.ledger.refusal(upload):
                refused.append(refusal)
                raise MultiPartException(refusal.message)  # and gradio's parser removes its files
            return message

        try:
            if refusal := self.ledger.refusal(upload):
                refused.append(refusal)
            else:
                await self.app(scope, counted, response)
            if refused:
                if not drained:
                    await self._drain(receive)
                logger.info("upload from %s refused (%d bytes read): %s", visitor, upload.bytes, refused[0].message)
                await refused[0].send(send)
            else:
                await response.replay(send)
        finally:
            self.ledger.finish(upload, response.stored() if not refused else [])

    async def _drain(self, receive: Receive) -> None:
        """Reads a refused upload to its end (never to disk), up to what a visitor may upload, so that its sender
        reads the answer rather than a broken connection."""
        read = 0
        while read <= self.ledger.settings.visitor_upload_bytes:
            message = await receive()
            read += len(message.get("body", b""))
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return

    async def _request(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_REQUEST_BYTES:
                await Refusal(413, f"A request may carry at most {MAX_REQUEST_BYTES >> 20} MiB.").send(send)
                return
        if _names_a_link(bytes(body)):
            await Refusal(400, "The app analyses uploaded videos only, not links.").send(send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # a disconnect, once the response is sent
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


class _HeldResponse:
    """The upload route's response (an ASGI `send`), held back until the upload is known to be kept or refused."""

    def __init__(self):
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    async def replay(self, send: Send) -> None:
        for message in self.messages:
            await send(message)

    def stored(self) -> list[str]:
        """The paths gradio answered with (a JSON list), for an upload it kept."""
        if not self.messages or self.messages[0].get("status") != 200:
            return []
        try:
            paths = json.loads(b"".join(message.get("body", b"") for message in self.messages[1:]))
        except ValueError:
            return []
        return [path for path in paths if isinstance(path, str)] if isinstance(paths, list) else []


class _PartCounter:
    """The parts of a multipart body begun so far, counted as it arrives (a delimiter not followed by "--")."""

    def __init__(self, content_type: str):
        boundary = next(
            (item.split("=", 1)[1].strip().strip('"') for item in content_type.split(";") if "boundary=" in item), ""
        )
        self.delimiter = b"--" + boundary.encode("latin-1", "replace")
        self.parts = 0
        self._tail = b""

    def feed(self, chunk: bytes) -> int:
        data, start, size = self._tail + chunk, 0, len(self.delimiter)
        while (found := data.find(self.delimiter, start)) != -1 and found + size + 2 <= len(data):
            if data[found + size : found + size + 2] != b"--":
                self.parts += 1
            start = found + size
        self._tail = data[max(start, len(data) - size - 1) :]
        return self.parts


def _names_a_link(body: bytes) -> bool:
    """Whether a JSON body names a file by an http(s) link (gradio's FileData `path`)."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            path = item.get("path")
            if isinstance(path, str) and path.lower().startswith(("http://", "https://")):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _megabytes(size: int) -> str:
    return f"{size / 1e6:g} MB"


def _duration(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


def served_with_bounds(ledger: UploadLedger) -> dict:
    """`Blocks.launch`'s `app_kwargs` for gradio's FastAPI app: the bounds in front of its routes, and the removal
    of stale uploads while it serves."""
    return {"middleware": [Middleware(RequestBounds, ledger=ledger)], "lifespan": ledger.pruning}


__all__ = [
    "MAX_SOUND_CHUNK_BYTES",
    "SOUND_CHUNK_NAME",
    "RequestBounds",
    "UploadLedger",
    "is_sound_chunk",
    "served_with_bounds",
    "visitor_address",
]
