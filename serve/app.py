"""The Starlette application: predictions over HTTP with bounded uploads and a bounded worker pool.

Every error a client can cause is a 4xx with a JSON body naming the problem; the one
ONNX Runtime session is shared by all requests (it is thread-safe), and inference runs
in a fixed-size thread pool so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from digitloc.runtime.detector import Detector
from digitloc.runtime.imageio import ImageError, decode_image

IMAGE_TYPES = ("image/", "application/octet-stream")


class ClientError(Exception):
    """A request the server refuses: status code and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ClientError(413, f"upload of {int(declared):,} bytes exceeds the {limit:,}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ClientError(413, f"upload exceeds the {limit:,}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _images(request: Request, limit: int, max_files: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of the uploaded images: a raw image body, or multipart file fields."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit * max_files:
            raise ClientError(413, f"upload of {int(declared):,} bytes exceeds the limit")
        try:
            form = await request.form(max_files=max_files, max_part_size=limit)
        except Exception as exc:  # noqa: BLE001 - multipart parser errors come in several types
            raise ClientError(400, f"malformed multipart upload: {exc}") from None
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
    body = await _read_body(request, limit)
    return [("body", body)]


def create_app(detector: Detector, max_upload_bytes: int = 10 * 1024 * 1024, workers: int = 2,
               max_batch: int = 32) -> Starlette:
    """The application for one detector."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="digitloc-infer")

    def decode(name: str, data: bytes) -> Any:
        if not data:
            raise ClientError(400, f"{name}: empty upload")
        try:
            return decode_image(data, name, detector.max_pixels)
        except ImageError as exc:
            raise ClientError(422, str(exc)) from None

    async def infer(items: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
        images = [decode(n, d) for n, d in items]
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        detections = await loop.run_in_executor(pool, detector.predict_batch, images)
        ms = (time.perf_counter() - start) * 1000.0
        return [{"name": n, "width": im.shape[1], "height": im.shape[0], **d.to_dict(), "latency_ms": round(ms, 3)}
                for (n, _), im, d in zip(items, images, detections, strict=True)]

    async def predict(request: Request) -> JSONResponse:
        items = await _images(request, max_upload_bytes, 1)
        if len(items) != 1:
            raise ClientError(400, "POST /predict takes one image; use /predict/batch for several")
        return JSONResponse((await infer(items))[0])

    async def predict_batch(request: Request) -> JSONResponse:
        items = await _images(request, max_upload_bytes, max_batch)
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
        return JSONResponse({"error": exc.message, "status": exc.status}, status_code=exc.status)

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
    app = Starlette(routes=routes, exception_handlers={ClientError: client_error, HTTPException: http_error,
                                                       Exception: server_error})
    app.state.detector = detector
    return app
