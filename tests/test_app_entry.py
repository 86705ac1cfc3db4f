"""`python app.py`: the Space's entry point starts the server on the port it is given."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from app.cli import parse_args

from .app_server import free_port

ROOT = Path(__file__).parents[1]


def test_command_line_flags_set_port_host_length_limit_and_concurrency():
    args = parse_args(["--port", "7999", "--host", "0.0.0.0", "--max-seconds", "30", "--concurrency", "2"])
    assert (args.port, args.host, args.max_seconds, args.concurrency) == (7999, "0.0.0.0", 30.0, 2)
    defaults = parse_args([])
    assert (defaults.port, defaults.host) == (None, None)  # gradio then reads GRADIO_SERVER_PORT / _NAME


def test_python_app_py_serves_the_page_on_the_port_from_the_environment(tmp_path):
    port = free_port()
    environment = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as response:
                    config = json.load(response)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"app.py did not answer on port {port}: {server.stdout.read().decode()[-2000:]}")
        assert config["title"] == "AVIS: audio-visual instance segmentation"
    finally:
        server.terminate()
        server.wait(timeout=30)
