"""`python app.py`: serve the app on this machine (never through a share link), with the operator's settings."""

import argparse
import logging
import os

import gradio as gr

from modeling_avis.runtime import configure_runtime

from .layout import build_demo
from .settings import AppSettings, add_arguments, settings_from
from .uploads import UploadLedger, served_with_bounds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the AVIS app.")
    parser.add_argument("--port", type=int, default=None, help="default: $GRADIO_SERVER_PORT, else 7860")
    parser.add_argument("--host", default=None, help="default: $GRADIO_SERVER_NAME, else 127.0.0.1")
    add_arguments(parser)
    return parser.parse_args(argv)


# Seconds between the heartbeats by which gradio notices a visitor has left (and stops their analysis): its default 15.
HEARTBEAT_SECONDS = "2"


def serve(settings: AppSettings, **launch_options) -> gr.Blocks:
    """The app served with `settings` and the bounds on what requests carry (`app.uploads`); `launch_options` go to
    `Blocks.launch` (server_name, server_port, prevent_thread_lock, quiet)."""
    uploads = UploadLedger(settings)
    demo = build_demo(settings, uploads)
    # Without server-side rendering, every request reaches the Python app and its bounds: with it, gradio's Node
    # front (and its file workers) would take the uploads itself.
    demo.launch(
        share=False,
        ssr_mode=False,
        max_file_size=settings.max_upload_size,
        app_kwargs=served_with_bounds(uploads),
        **launch_options,
    )
    return demo


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_HEARTBEAT_INTERVAL", HEARTBEAT_SECONDS)
    # the app's own lines (each analysis's start and end, refused models and uploads, failures) in the server's log
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logging.getLogger("app").addHandler(handler)
    logging.getLogger("app").setLevel(logging.INFO)
    configure_runtime()
    serve(settings_from(args), server_name=args.host, server_port=args.port)
