"""digitloc-serve: run the HTTP API and web page with uvicorn."""

from __future__ import annotations

import socket

import click

from digitloc.runtime.detector import DEFAULT_REFINE
from digitloc.runtime.imageio import DEFAULT_MAX_PIXELS
from digitloc.runtime.options import fail, model_option, needs_extras, provider_option, refine_option


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or one error line naming why not (port in use, bad host)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        fail(f"{host}: cannot resolve host ({exc.strerror})", code=2)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        fail(f"{host}:{port}: cannot listen ({exc.strerror or exc})", code=2)
    return sock


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
@refine_option(DEFAULT_REFINE)
def main(model: str | None, provider: str, host: str, port: int, workers: int, max_upload_mb: float,
         max_request_mb: float, max_batch: int, max_pixels: int, refine: bool) -> None:
    """Serve POST /predict, POST /predict/batch, GET /healthz, GET /metadata and the page at GET /."""
    for name, value, low, high in (("--port", port, 0, 65535), ("--workers", workers, 1, 256),
                                   ("--max-batch", max_batch, 1, 10_000), ("--max-pixels", max_pixels, 64, None)):
        if value < low or (high is not None and value > high):
            fail(f"{name} {value}: must be {low}..{high}" if high else f"{name} {value}: must be at least {low}", code=2)
    for name, value in (("--max-upload-mb", max_upload_mb), ("--max-request-mb", max_request_mb)):
        if not value > 0:
            fail(f"{name} {value}: must be above 0", code=2)
    import uvicorn

    from digitloc.runtime.contract import ContractError
    from digitloc.runtime.detector import Detector, ProviderError
    from digitloc.serve.app import create_app

    try:
        detector = Detector(model, provider=provider, max_pixels=max_pixels, refine=refine)
    except (ContractError, ProviderError, FileNotFoundError) as exc:
        fail(str(exc), code=2)
    app = create_app(detector, int(max_upload_mb * 1024 * 1024), workers, max_batch,
                     max_request_bytes=int(max_request_mb * 1024 * 1024))
    sock = bind(host, port)  # bound before saying so: a port in use is one error line, not a false "serving at"
    port = sock.getsockname()[1]
    click.echo(f"serving {detector.model_path.name} on {detector.provider} at http://{host}:{port}/", err=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])
