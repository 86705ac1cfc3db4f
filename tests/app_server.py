"""The app served on 127.0.0.1 and a free port: in-process (`serve_app`), or as `python app.py` in a process of its
own (`app_process`), for the client, browser and serving tests."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
from gradio_client import Client

from app.cli import serve
from app.settings import AppSettings

ROOT = Path(__file__).parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve_app(work_folder: Path, **settings) -> Iterator[str]:
    """The URL of a running app (never shared) on the embedded default model, closed when the block ends."""
    port = free_port()
    demo = serve(
        AppSettings(work_folder=work_folder, **settings),
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@dataclass
class AppProcess:
    url: str
    client: Client
    process: psutil.Process
    cache: Path  # gradio's cache: the uploads, the examples, and the runs under avis/
    log: Path


@contextmanager
def app_process(root: Path, **environment: str) -> Iterator[AppProcess]:
    """`python app.py` with its defaults but for `environment` (AVIS_* variables), its cache and log under `root`,
    and a gradio_client on it; stopped when the block ends."""
    port = free_port()
    variables = {
        **os.environ,
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_TEMP_DIR": str(root / "cache"),
        "GRADIO_ANALYTICS_ENABLED": "False",
        **environment,
    }
    log_path = root / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=variables, stdout=log, stderr=log)
        try:
            url, deadline = f"http://127.0.0.1:{port}/", time.monotonic() + 120
            while True:
                try:
                    client = Client(url, verbose=False, download_files=str(root / "downloads"))
                    break
                except Exception:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError(f"the server did not start: {log_path.read_text()[-2000:]}") from None
                    time.sleep(1)
            yield AppProcess(url, client, psutil.Process(process.pid), root / "cache", log_path)
        finally:
            process.terminate()
            process.wait(timeout=60)
