"""The app served in-process on 127.0.0.1 and a free port, for the client and browser tests."""

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.layout import build_demo
from app.settings import AppSettings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve_app(work_folder: Path, **settings) -> Iterator[str]:
    """The URL of a running app (never shared) on the embedded default model, closed when the block ends."""
    demo = build_demo(AppSettings(work_folder=work_folder, **settings))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, share=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
