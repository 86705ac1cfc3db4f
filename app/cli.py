"""`python app.py`: serve the app on this machine (never through a share link)."""

import argparse
import os

from .layout import build_demo
from .pipeline import AppSettings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the AVIS app.")
    parser.add_argument("--port", type=int, default=None, help="default: $GRADIO_SERVER_PORT, else 7860")
    parser.add_argument("--host", default=None, help="default: $GRADIO_SERVER_NAME, else 127.0.0.1")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=float(os.environ.get("AVIS_MAX_SECONDS", AppSettings.max_video_seconds)),
        help="videos longer than this are trimmed (default: $AVIS_MAX_SECONDS, else %(default)s)",
    )
    parser.add_argument("--concurrency", type=int, default=AppSettings.concurrency_limit, help="analyses at once")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = AppSettings(max_video_seconds=args.max_seconds, concurrency_limit=args.concurrency)
    build_demo(settings).launch(
        server_name=args.host, server_port=args.port, share=False, max_file_size=settings.max_upload_size
    )
