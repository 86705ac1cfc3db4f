"""The Live tab in a real headless Chromium (Debian's `chromium`, driven with playwright), whose fake camera and
microphone play a sounding-shapes clip, against the app served in-process."""

import base64
import io
import logging
import re
import time
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from app.layout import EXAMPLE_FOLDER
from modeling_avis.visualization import track_colour

from .app_media import write_fake_devices
from .app_server import serve_app

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

from .test_app_browser import CHROMIUM_ARGS  # noqa: E402

SOLO = EXAMPLE_FOLDER / "shapes_solo.mp4"  # a triangle sounds from its first second to its last
FIRST_MASK_SECONDS = 10
SCREENSHOT = Path(__file__).parents[1] / "outputs" / "app_live_browser.png"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Chromium whose camera plays the clip's pictures and whose microphone plays its sound, looped."""
    y4m, wav = write_fake_devices(SOLO, tmp_path_factory.mktemp("devices"))
    devices = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={y4m}",
        f"--use-file-for-fake-audio-capture={wav}",
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + devices, headless=True
        )
        yield browser
        browser.close()


def painted_pixels(view_src: str, colour: tuple[int, int, int]) -> int:
    """Pixels of the painted picture (an inline JPEG) within a JPEG's error of a track's opaque colour (its
    contour and its label's box)."""
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(view_src.split(",", 1)[1]))).convert("RGB"))
    return int((np.abs(picture.astype(int) - colour).max(axis=-1) < 40).sum())


def test_the_sounding_shape_appears_masked_and_labelled_within_10_s_and_leaving_frees_the_slot(
    browser, tmp_path, caplog, monkeypatch
):
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "1")  # as app.py sets it (2 s)
    caplog.set_level(logging.INFO, logger="app")
    with serve_app(tmp_path / "runs") as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.set_default_timeout(30_000)
        page.goto(url)
        page.get_by_role("tab", name="Live").click()
        page.locator("#live-webcam").get_by_text("Click to Access Webcam").click()
        record = page.locator("#live-webcam .button-wrap button").first
        record.wait_for()
        page.locator("#live-microphone .record-button").click()
        record.click()
        started = time.monotonic()
        instances = page.locator("#live-instances")
        while "triangle" not in instances.inner_text():
            assert time.monotonic() - started < 60, page.inner_text("#live-status")
            time.sleep(0.05)
        first_mask = time.monotonic() - started
        print(f"live: the sounding triangle in the instance table {first_mask:.2f} s after the webcam started")
        assert first_mask < FIRST_MASK_SECONDS
        # the picture comes back with the triangle's track painted in its colour: its contour and its label
        view = page.locator("#live-view img")
        deadline = time.monotonic() + 10
        while painted_pixels(view.get_attribute("src"), track_colour(1)) < 200:
            assert time.monotonic() < deadline, "no picture came back painted"
            time.sleep(0.1)
        time.sleep(4)  # a few frames more, for their latency
        status = page.inner_text("#live-status")
        live, latency = (next(line for line in status.splitlines() if word in line) for word in ("Live", "Latency"))
        print(f"live: {live} {latency}")
        assert re.search(r"Latency \(from a frame's arrival to its masks\): [\d.]+ s, median [\d.]+ s", status)
        assert page.locator("[data-testid=toast-body]").count() == 0  # no error came up on the way
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        # An analysis asked for now waits for the live session's slot; leaving the page frees it.
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        job = client.submit(handle_file(str(SOLO)), "Default model", 1, 0.5, 10, api_name="/analyse")
        time.sleep(2)
        assert "analysis of shapes_solo.mp4 started" not in caplog.text
        page.close()
        left = time.monotonic()
        while "analysis of shapes_solo.mp4 started" not in caplog.text:
            assert time.monotonic() - left < 10, "the live session kept its slot after the page was left"
            time.sleep(0.05)
        freed = time.monotonic() - left
        print(f"live: the next analysis started {freed:.2f} s after the page was closed")
        assert freed < 5
        assert re.search(r"live session \w+ ended at [\d.]+ \(left\)", caplog.text)
        job.result(timeout=120)
