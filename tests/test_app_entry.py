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
from app.settings import settings_from

from .app_server import free_port

ROOT = Path(__file__).parents[1]


def test_every_setting_is_a_flag_or_a_variable_with_safe_defaults(monkeypatch, tmp_path):
    args = parse_args(["--port", "7999", "--host", "0.0.0.0", "--max-video-seconds", "30", "--concurrency-limit", "2"])
    assert (args.port, args.host) == (7999, "0.0.0.0")
    settings = settings_from(args)
    assert (settings.max_video_seconds, settings.concurrency_limit) == (30.0, 2)
    defaults = settings_from(parse_args([]))
    assert (defaults.local_models, defaults.hub_models) == (None, ())  # a visitor gets the default model only
    assert (defaults.max_video_seconds, defaults.concurrency_limit, defaults.queue_size) == (60.0, 1, 16)
    assert (defaults.kept_results, defaults.result_seconds) == (8, 1800)
    # uploads: 20 files and 1 GB per visitor in 10 min, kept 10 min, 4 GB in all; the visitor is the connection
    assert (defaults.visitor_uploads, defaults.visitor_upload_bytes, defaults.upload_seconds) == (20, 10**9, 600)
    assert (defaults.upload_total_bytes, defaults.proxy_hops) == (4 * 10**9, 0)
    monkeypatch.setenv("AVIS_PROXY_HOPS", "1")
    assert settings_from(parse_args([])).proxy_hops == 1
    monkeypatch.setenv("AVIS_HUB_MODELS", "owner/a, owner/b")
    monkeypatch.setenv("AVIS_LOCAL_MODELS", str(tmp_path))
    monkeypatch.setenv("AVIS_DEFAULT_MODEL", "owner/a")
    from_environment = settings_from(parse_args([]))
    assert from_environment.hub_models == ("owner/a", "owner/b") and from_environment.local_models == tmp_path
    assert from_environment.default_model == "owner/a"
    assert settings_from(parse_args(["--max-video-seconds", "5"])).max_video_seconds == 5.0  # the flag first


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
