"""The Starlette application: predictions over HTTP with bounded uploads and a bounded worker pool.

Every error a client can cause is a 4xx with a JSON body naming the problem; the one
ONNX Runtime session is shared by all requests (it is thread-safe). Bodies are counted
while they arrive, under a deadline and a budget of body bytes held at once (each request
holds the bytes it has received, not what it might send, so stalled uploads hold little);
images are decoded and predicted in a fixed-size thread pool under a budget of decoded
pixels, so the event loop keeps serving and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import cv2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from digitloc.runtime.detector import Detector
from digitloc.runtime.imageio import ImageError, decode_image, header_size

IMAGE_TYPES = ("image/", "application/octet-stream")


class ClientError(Exception):
    """A request the server refuses: status code and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class ClientGone(Exception):
    """The client closed its connection before its body was whole: logged as one line, never answered."""

    def __init__(self, received: int) -> None:
        super().__init__(f"disconnected after {received:,} bytes of its body")
        self.received = received


async def _read_body(request: Request, limit: int, held: Held, timeout: float) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` (declared or chunked) and
    with 408 when it is not whole within ``timeout`` seconds; ``held`` grows with each chunk."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ClientError(413, f"upload of {int(declared):,} bytes exceeds the {limit:,}-byte limit")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ClientError(413, f"upload exceeds the {limit:,}-byte limit")
                await held.grow(len(chunk))
                chunks.append(chunk)
    except TimeoutError:
        raise ClientError(408, f"request body not received within {timeout:g} s") from None
    except ClientDisconnect:
        raise ClientGone(size) from None
    return b"".join(chunks)


async def _images(request: Request, limit: int, max_files: int, body_limit: int, held: Held,
                  timeout: float) -> list[tuple[str, bytes]]:
    """(name, bytes) of the uploaded images: a raw image body, or multipart file fields.

    The body is read with a running byte count (``body_limit`` for the whole request), so an
    oversized upload is refused while it arrives, chunked or not, and never spooled whole.
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        body = await _read_body(request, body_limit, held, timeout)

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=max_files, max_part_size=limit)
        except Exception as exc:  # multipart parser errors come in several types
            raise ClientError(400, f"malformed multipart upload: {exc}") from None
        del body
        files = [(v.filename or k, await v.read()) for k, v in form.multi_items() if hasattr(v, "read")]
        await form.close()
        if not files:
            raise ClientError(400, "multipart upload holds no file field")
        for name, data in files:
            if len(data) > limit:
                raise ClientError(413, f"{name}: exceeds the {limit:,}-byte limit")
        return files
    if not ctype or not ctype.startswith(IMAGE_TYPES):
        raise ClientError(415, f"content type {ctype or '(none)'!r} is not an image or multipart upload")
    return [("body", await _read_body(request, limit, held, timeout))]


class Budget:
    """A bounded amount (decoded pixels, or request bytes) in flight: a holder waits until its
    amount fits (one larger than the whole budget waits for all of it), so memory stays bounded
    however many requests arrive at once."""

    def __init__(self, total: int) -> None:
        self.total, self.free = total, total
        self._cond = asyncio.Condition()

    async def take(self, amount: int) -> int:
        """Wait until ``amount`` (at most the whole budget) is free and take it; returns what was taken."""
        amount = min(max(amount, 0), self.total)
        async with self._cond:
            await self._cond.wait_for(lambda: self.free >= amount)
            self.free -= amount
        return amount

    async def give(self, amount: int) -> None:
        async with self._cond:
            self.free += amount
            self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def hold(self, amount: int) -> AsyncIterator[None]:
        taken = await self.take(amount)
        try:
            yield
        finally:
            await self.give(taken)

    @contextlib.asynccontextmanager
    async def growing(self) -> AsyncIterator[Held]:
        """A holding that grows with the bytes a request has received, all given back at its end."""
        held = Held(self)
        try:
            yield held
        finally:
            await self.give(held.amount)


class Held:
    """What one request holds of a Budget: it grows chunk by chunk (see ``Budget.growing``)."""

    def __init__(self, budget: Budget) -> None:
        self.budget, self.amount = budget, 0

    async def grow(self, amount: int) -> None:
        self.amount += await self.budget.take(min(amount, self.budget.total - self.amount))


def _yield_to_the_loop() -> None:
    """Lower a worker thread's CPU priority (Linux: per thread), so that on a busy machine the
    event loop (/healthz, new requests) runs before the next slice of a large decode."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 5)
    except (AttributeError, OSError):
        pass


def create_app(detector: Detector, max_upload_bytes: int = 10 * 1024 * 1024, workers: int = 2,
               max_batch: int = 32, max_request_bytes: int | None = None,
               max_pixels_in_flight: int | None = None, body_timeout: float = 30.0) -> Starlette:
    """The application for one detector.

    ``max_request_bytes`` bounds a whole request body (default: four uploads' worth), and twice
    that bounds the body bytes held at once across all requests (each holds what it has received);
    a body not whole within ``body_timeout`` seconds gets 408; ``max_pixels_in_flight`` bounds the
    decoded pixels held at once (default: the detector's pixel limit, one largest image at a time).
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="digitloc-infer", initializer=_yield_to_the_loop)
    body_limit = max_request_bytes or 4 * max_upload_bytes + 65536
    pixels = Budget(max_pixels_in_flight or detector.max_pixels)
    bodies = Budget(2 * body_limit)

    def work(name: str, data: bytes) -> dict[str, Any]:
        """Decode and predict one image (in the pool, off the event loop)."""
        try:
            image = decode_image(data, name, detector.max_pixels, cv2.IMREAD_COLOR)
        except ImageError as exc:
            raise ClientError(422, str(exc)) from None
        start = time.perf_counter()
        det = detector.predict(image)
        ms = (time.perf_counter() - start) * 1000.0
        return det.to_dict(ms, name=name, width=image.shape[1], height=image.shape[0])

    async def one(name: str, data: bytes, failed: asyncio.Event) -> dict[str, Any] | None:
        if not data:
            raise ClientError(400, f"{name}: empty upload")
        size = header_size(data)
        async with pixels.hold(size[0] * size[1] if size else 0):
            if failed.is_set():
                return None  # another image of the request failed: this one is not decoded
            try:
                return await asyncio.get_running_loop().run_in_executor(pool, work, name, data)
            except BaseException:
                failed.set()
                raise

    async def infer(items: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
        # Every task ends before the request does (none cancelled mid-decode, so the budget
        # is only given back when its pixels are free); the first error is the answer.
        failed = asyncio.Event()
        results = await asyncio.gather(*(one(n, d, failed) for n, d in items), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value]

    async def predict(request: Request) -> JSONResponse:
        limit = max_upload_bytes + 65536
        async with bodies.growing() as held:
            items = await _images(request, max_upload_bytes, 1, limit, held, body_timeout)
            if len(items) != 1:
                raise ClientError(400, "POST /predict takes one image; use /predict/batch for several")
            return JSONResponse((await infer(items))[0])

    async def predict_batch(request: Request) -> JSONResponse:
        async with bodies.growing() as held:
            items = await _images(request, max_upload_bytes, max_batch, body_limit, held, body_timeout)
            return JSONResponse({"results": await infer(items)})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": detector.model_path.name, "provider": detector.provider})

    async def metadata(request: Request) -> JSONResponse:
        meta = {}
        for key, value in detector.info.metadata.items():
            try:
                meta[key] = json.loads(value) if value[:1] in "[{" else value
            except ValueError:
                meta[key] = value
        return JSONResponse(meta)

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(resources.files("digitloc.serve").joinpath("page.html").read_text())

    async def client_error(request: Request, exc: ClientError) -> JSONResponse:
        # A body refused before its end (too large, too slow) is not read further: the connection closes.
        headers = {"connection": "close"} if exc.status in (408, 413) else None
        return JSONResponse({"error": exc.message, "status": exc.status}, status_code=exc.status, headers=headers)

    async def client_gone(request: Request, exc: ClientGone) -> JSONResponse:
        client = request.client
        who = f"{client.host}:{client.port}" if client else "a client"
        logging.getLogger("uvicorn.error").warning("%s %s from %s: %s", request.method, request.url.path, who, exc)
        return JSONResponse({"error": str(exc), "status": 400}, status_code=400)  # never sent: nobody listens

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail, "status": exc.status_code}, status_code=exc.status_code)

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(exc).__name__}", "status": 500}, status_code=500)

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metadata", metadata, methods=["GET"]),
        Route("/predict", predict, methods=["POST"]),
        Route("/predict/batch", predict_batch, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={ClientError: client_error, ClientGone: client_gone,
                                                       HTTPException: http_error, Exception: server_error})
    app.state.detector = detector
    return app
