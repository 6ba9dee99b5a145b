"""digitloc-serve: run the HTTP API and web page with uvicorn."""

from __future__ import annotations

import click

from digitloc.runtime.detector import DEFAULT_REFINE
from digitloc.runtime.options import fail, refine_option


@click.command()
@click.option("--model", type=click.Path(dir_okay=False), default=None, help="ONNX model (default: the shipped one).")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
@click.option("--workers", default=2, show_default=True, help="Inference threads (the bounded pool).")
@click.option("--max-upload-mb", default=10.0, show_default=True, help="Largest accepted upload.")
@click.option("--max-batch", default=32, show_default=True, help="Most images in one /predict/batch.")
@refine_option(DEFAULT_REFINE)
def main(model: str | None, provider: str, host: str, port: int, workers: int, max_upload_mb: float,
         max_batch: int, refine: bool) -> None:
    """Serve POST /predict, POST /predict/batch, GET /healthz, GET /metadata and the page at GET /."""
    try:
        import uvicorn

        from digitloc.serve.app import create_app
    except ImportError as exc:
        fail(f"digitloc-serve needs the serve extra: pip install 'digitloc[serve]' ({exc})")
    from digitloc.runtime.contract import ContractError
    from digitloc.runtime.detector import Detector, ProviderError

    try:
        detector = Detector(model, provider=provider, refine=refine)
    except (ContractError, ProviderError, FileNotFoundError) as exc:
        fail(str(exc), code=2)
    app = create_app(detector, int(max_upload_mb * 1024 * 1024), workers, max_batch)
    click.echo(f"serving {detector.model_path.name} on {detector.provider} at http://{host}:{port}/", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
