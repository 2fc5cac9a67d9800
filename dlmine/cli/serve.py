"""`serve`: a run as an HTTP JSON API (`dlmine.results.serve_http`), until SIGTERM or Ctrl-C."""

from __future__ import annotations

import click

from dlmine.backend.runtime import import_keras
from dlmine.cli.options import CHECKPOINT, RUN_DIR, debug
from dlmine.results.serve import MAX_BODY
from dlmine.results.serve_http import require_extra, serve


@click.command("serve")
@click.argument("run_dir", type=RUN_DIR)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="The TCP port.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Server processes, each with its own copy of the model.")
@click.option("--max-body-mib", type=click.FloatRange(min=0, min_open=True),
              default=MAX_BODY / 2**20, show_default=True,
              help="The largest request body, in MiB; larger ones get 413.")
@CHECKPOINT
def serve_command(run_dir, host, port, workers, max_body_mib, checkpoint) -> None:
    """Serve a run over HTTP: GET /health, /metadata; POST /predict (/recommend, /similar)."""
    require_extra()
    if workers == 1:
        import_keras(debug())
    stopped = serve(run_dir, host, port, workers, checkpoint, int(max_body_mib * 2**20))
    if stopped:
        click.echo(f"stopped by {stopped}; every request in flight was answered", err=True)
