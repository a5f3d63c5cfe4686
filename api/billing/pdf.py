"""Invoice PDFs: WeasyPrint in child processes, each render under a time limit.

WeasyPrint is CPU-bound and a thread cannot be stopped, so it never runs in the
service's process (which does not even import it): `PdfRenderer` keeps up to
`workers` child Python processes, started when first needed, and sends each the
HTML of one document at a time (`documents.render_html`) over its stdin; the
PDF comes back over its stdout. A render that outlives its `timeout`, or whose
caller is cancelled, gets its process killed: the caller gets `PdfTimeout` (or
its cancellation), and the next render starts a fresh process. A worker renders
one document at a time, so no other document is lost with it.

    renderer = PdfRenderer()                      # at start-up; no process yet
    pdf = await renderer.render_pdf(invoice)      # bytes, `%PDF-...`
    await renderer.close()                        # at shut-down

Errors::

    PdfError            the document could not be rendered (WeasyPrint failed, the
     |                  worker could not start or died, the renderer is closed)
     +-- PdfTimeout     the render took longer than its time limit; it was stopped

`pdf_bytes(html)` is the render itself, as the worker runs it. The document
loads nothing: its stylesheet is inlined, and every URL in it is refused, so a
document can neither read local files nor reach the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import struct
import sys
from dataclasses import dataclass
from typing import BinaryIO

from tenantry.api.billing.documents import render_html
from tenantry.core.invoices import Invoice

STARTUP_TIMEOUT = 60.0
"""Seconds a worker may take to start (Python, WeasyPrint, a first small document to
load Pango and the fonts); not counted in a document's time limit."""

_WORKER = "from tenantry.api.billing.pdf import _serve; _serve()"
# Frames: a request is its length then the HTML (UTF-8); a reply is a status byte,
# its length, then the PDF or the error message (UTF-8). The first reply, sent
# before any request, says whether WeasyPrint loaded.
_LENGTH = struct.Struct(">Q")
_REPLY = struct.Struct(">BQ")
_OK, _FAILED = 0, 1


class PdfError(Exception):
    """An invoice PDF could not be rendered."""


class PdfTimeout(PdfError):
    """An invoice PDF took longer than its time limit to render; its render was stopped."""


def pdf_bytes(html: str) -> bytes:
    """The PDF of a standalone HTML document (CPU-bound: run it in a worker process)."""
    import weasyprint  # type: ignore[import-untyped]  # ships no type information

    refuse_all = weasyprint.URLFetcher(allowed_protocols=())
    pdf: bytes = weasyprint.HTML(string=html, url_fetcher=refuse_all).write_pdf()
    return pdf


class PdfRenderer:
    """Renders invoice PDFs in up to `workers` child processes, started when needed."""

    def __init__(self, *, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("a PDF renderer needs at least one worker")
        self._workers = workers
        # An idle worker, or None for a place whose process is not started yet.
        self._idle: asyncio.Queue[_Worker | None] = asyncio.Queue()
        for _ in range(workers):
            self._idle.put_nowait(None)
        self._reaping: set[asyncio.Task[int]] = set()
        self._closed = False

    # `timeout` is not the caller's deadline (that would be `asyncio.timeout` around the
    # call, which works too): it limits the render alone, and its end is `PdfTimeout`.
    async def render_pdf(self, invoice: Invoice, *, timeout: float = 30.0) -> bytes:  # noqa: ASYNC109
        """The invoice as a PDF. Waits for a free worker (starting one if need be, up to
        `STARTUP_TIMEOUT`); `timeout` limits the render itself, in seconds."""
        html = render_html(invoice).encode()
        worker = await self._idle.get()
        healthy = False
        try:
            if self._closed:
                raise PdfError("the PDF renderer is closed")
            if worker is None or not worker.running:
                worker = await _Worker.start()
            try:
                async with asyncio.timeout(timeout):
                    ok, payload = await worker.exchange(html)
            except TimeoutError:
                raise PdfTimeout(
                    f"invoice {invoice.id}: the PDF took longer than {timeout:g} s to render "
                    "and was stopped"
                ) from None
            healthy = True
        finally:
            if healthy and not self._closed:
                self._idle.put_nowait(worker)
            else:
                if worker is not None:
                    self._stop(worker)
                self._idle.put_nowait(None)
        if not ok:
            raise PdfError(f"invoice {invoice.id}: WeasyPrint failed: {payload.decode()}")
        return payload

    async def close(self) -> None:
        """Stop the workers: idle ones now, busy ones when their render ends. Renders
        asked for afterwards raise `PdfError`."""
        self._closed = True
        while not self._idle.empty():
            worker = self._idle.get_nowait()
            if worker is not None:
                self._stop(worker)
        # Wake whoever waits for a worker, to tell them the renderer is closed.
        for _ in range(self._workers):
            self._idle.put_nowait(None)
        await asyncio.gather(*self._reaping)

    def _stop(self, worker: _Worker) -> None:
        worker.kill()
        reaping = asyncio.create_task(worker.process.wait())
        self._reaping.add(reaping)
        reaping.add_done_callback(self._reaping.discard)


@dataclass(eq=False)
class _Worker:
    """One child process rendering one document at a time. An exchange cut short
    leaves the pipes mid-frame, so a worker whose exchange was cut is killed, never
    reused."""

    process: asyncio.subprocess.Process

    @classmethod
    async def start(cls) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            # -P: the working directory (a checkout's `operator/`, say) is not on sys.path.
            sys.executable, "-P", "-c", _WORKER,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        worker = cls(process)
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT):
                ok, payload = await worker.reply()
            if not ok:
                raise PdfError(f"the PDF worker could not start WeasyPrint: {payload.decode()}")
        except TimeoutError:
            worker.kill()
            raise PdfError(f"the PDF worker did not start within {STARTUP_TIMEOUT:g} s") from None
        except BaseException:
            worker.kill()
            raise
        return worker

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def exchange(self, html: bytes) -> tuple[bool, bytes]:
        """Send one document, wait for its reply: (rendered, PDF or error message)."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(_LENGTH.pack(len(html)) + html)
            await self.process.stdin.drain()
        except ConnectionError as error:
            raise PdfError("the PDF worker exited (see its error output)") from error
        return await self.reply()

    async def reply(self) -> tuple[bool, bytes]:
        assert self.process.stdout is not None
        try:
            status, length = _REPLY.unpack(await self.process.stdout.readexactly(_REPLY.size))
            return status == _OK, await self.process.stdout.readexactly(length)
        except asyncio.IncompleteReadError as error:
            raise PdfError("the PDF worker exited (see its error output)") from error

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()


def _serve() -> None:
    """The worker: renders the documents it reads from stdin until stdin closes."""
    # Ctrl-C reaches the whole process group: the service decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    # Whatever else writes to stdout (a library, a stray print) must not land
    # inside a reply: it goes to stderr, with the worker's warnings.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        # Up front: the imports, Pango and the fonts take longer than a document.
        pdf_bytes("<p>Warming up.</p>")
    except Exception as error:
        _send(replies, _FAILED, f"{type(error).__name__}: {error}".encode())
        return
    _send(replies, _OK, b"")
    # Until stdin closes (the service closed the renderer, or exited): then quietly.
    with contextlib.suppress(BrokenPipeError):
        while len(header := requests.read(_LENGTH.size)) == _LENGTH.size:
            (length,) = _LENGTH.unpack(header)
            html = requests.read(length)
            if len(html) < length:
                return
            try:
                pdf = pdf_bytes(html.decode())
            except Exception as error:
                _send(replies, _FAILED, f"{type(error).__name__}: {error}".encode())
            else:
                _send(replies, _OK, pdf)


def _send(replies: BinaryIO, status: int, payload: bytes) -> None:
    replies.write(_REPLY.pack(status, len(payload)) + payload)
    replies.flush()
