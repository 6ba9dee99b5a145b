"""digitloc-serve: run the HTTP API and web page with uvicorn."""

from __future__ import annotations

import math
import socket

import click

from digitloc.runtime.detector import DEFAULT_REFINE
from digitloc.runtime.imageio import DEFAULT_MAX_PIXELS
from digitloc.runtime.options import fail, model_option, needs_extras, provider_option, refine_option


def bind(host: str, port: int, max_connections: int = 1000) -> socket.socket:
    """A listening socket on host:port that accepts at most ``max_connections`` at once (fewer where
    the file limit is lower; see ``serve.connections``), or one error line naming why not."""
    from digitloc.serve.connections import connection_cap, listening_socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        fail(f"{host}: cannot resolve host ({exc.strerror})", code=2)
    family, kind, proto, _, address = infos[0]
    sock = listening_socket(family, kind, proto, connection_cap(max_connections))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        fail(f"{host}:{port}: cannot listen ({exc.strerror or exc})", code=2)
    return sock


def url_of(host: str, port: int) -> str:
    """The URL of host:port; an IPv6 address goes in brackets (``http://[::1]:8080/``)."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def check_numbers(ints: tuple[tuple[str, int, int, int], ...], floats: tuple[tuple[str, float, float], ...]) -> None:
    """Every numeric option in its range (ints: name, value, low, high; floats: name, value, high, above 0),
    or one error line: infinite, NaN and absurd values included."""
    for name, value, low, high in ints:
        if not low <= value <= high:
            fail(f"{name} {value}: must be {low}..{high}", code=2)
    for name, number, high in floats:
        if not (math.isfinite(number) and 0 < number <= high):
            fail(f"{name} {number:g}: must be a number above 0 and at most {high:g}", code=2)


@needs_extras("digitloc-serve", "serve")
@click.command()
@model_option()
@provider_option()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, help="TCP port, 1-65535 (0: any free port).")
@click.option("--workers", default=2, show_default=True, help="Decode and inference threads (the bounded pool).")
@click.option("--max-upload-mb", default=10.0, show_default=True, help="Largest accepted image upload.")
@click.option("--max-request-mb", default=40.0, show_default=True, help="Largest request body (a whole batch).")
@click.option("--max-batch", default=32, show_default=True, help="Most images in one /predict/batch.")
@click.option("--max-pixels", default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse larger images; also the decoded pixels held at once across all requests.")
@click.option("--keep-alive-s", default=5, show_default=True,
              help="Close a connection with no request in flight after this many seconds.")
@click.option("--body-timeout", default=30.0, show_default=True,
              help="Seconds a request body may take to arrive whole (then 408).")
@click.option("--max-connections", default=1000, show_default=True,
              help="Open connections at most (kept below the file limit); past it, the longest idle one is closed.")
@refine_option(DEFAULT_REFINE)
def main(model: str | None, provider: str, host: str, port: int, workers: int, max_upload_mb: float,
         max_request_mb: float, max_batch: int, max_pixels: int, keep_alive_s: int, body_timeout: float,
         max_connections: int, refine: bool) -> None:
    """Serve POST /predict, POST /predict/batch, GET /healthz, GET /metadata and the page at GET /."""
    check_numbers((("--port", port, 0, 65535), ("--workers", workers, 1, 256), ("--max-batch", max_batch, 1, 10_000),
                   ("--max-pixels", max_pixels, 64, 4_000_000_000), ("--keep-alive-s", keep_alive_s, 1, 3600),
                   ("--max-connections", max_connections, 1, 100_000)),
                  (("--max-upload-mb", max_upload_mb, 1024), ("--max-request-mb", max_request_mb, 4096),
                   ("--body-timeout", body_timeout, 3600)))
    import uvicorn

    from digitloc.runtime.contract import ContractError
    from digitloc.runtime.detector import Detector, ProviderError
    from digitloc.runtime.modelcheck import check_model
    from digitloc.serve.app import create_app
    from digitloc.serve.connections import guarded_protocol

    try:
        detector = Detector(model, provider=provider, max_pixels=max_pixels, refine=refine)
        check_model(detector)  # a model that contradicts its metadata never says "ok" at /healthz
        if max_batch > 1 and hasattr(detector.session, "choose"):
            detector.session.choose(max_batch)  # auto with OpenVINO: probe batches of several now, not on a request
    except (ContractError, ProviderError, FileNotFoundError) as exc:
        fail(str(exc), code=2)
    app = create_app(detector, int(max_upload_mb * 1024 * 1024), workers, max_batch,
                     max_request_bytes=int(max_request_mb * 1024 * 1024), body_timeout=body_timeout)
    sock = bind(host, port, max_connections)  # bound before saying so: a port in use is one line, not "serving at"
    port = sock.getsockname()[1]
    click.echo(f"serving {detector.model_path.name} on {detector.provider} at {url_of(host, port)}", err=True)
    protocol = guarded_protocol(sock.guard, keep_alive_s)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", http=protocol, timeout_keep_alive=keep_alive_s))
    server.run(sockets=[sock])
