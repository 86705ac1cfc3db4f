"""The page in a real headless Chromium (Debian's `chromium`, as CI installs it), driven with playwright."""

import logging
import re
import time
from pathlib import Path

import pytest

from app.layout import EXAMPLE_FOLDER

from .app_media import write_video
from .app_server import serve_app

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EXAMPLE = EXAMPLE_FOLDER / "shapes_duet.mp4"
SCREENSHOT = Path(__file__).parents[1] / "outputs" / "app_browser.png"
OVERLAY_READY = "() => { const v = document.querySelector('#overlay-video video'); return v && v.readyState === 4; }"
# Plays the overlay muted for a second and reports what the browser decoded.
PLAY_OVERLAY = """async () => {
    const video = document.querySelector('#overlay-video video');
    video.muted = true;
    await video.play();
    await new Promise(resolve => setTimeout(resolve, 1000));
    video.pause();
    return {duration: video.duration, width: video.videoWidth, height: video.videoHeight,
            audioBytes: video.webkitAudioDecodedByteCount, played: video.currentTime};
}"""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    with serve_app(tmp_path_factory.mktemp("runs")) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.app_url = url
        yield page
        browser.close()


def open_and_upload(page, path: Path) -> None:
    page.goto(page.app_url)
    page.locator("#input-video input[type=file]").set_input_files(str(path))
    page.locator("#input-video video").wait_for(state="attached")
    page.click("#run-button")


def test_uploaded_video_comes_back_as_a_playable_overlay_with_sound(page):
    open_and_upload(page, EXAMPLE)
    page.wait_for_function(OVERLAY_READY, timeout=120_000)
    played = page.evaluate(PLAY_OVERLAY)
    assert abs(played["duration"] - 9.0) <= 1.0
    assert (played["width"], played["height"]) == (384, 288)
    assert played["audioBytes"] > 0 and played["played"] > 0.5
    status = page.inner_text("#status")
    assert "sounding instance" in status
    # the result names the model that answered, and what it knows
    assert (
        "Model: avis-sounding-shapes (the default). A small AVISM trained on synthetic sounding shapes: it knows "
        "circles, squares, "
        "triangles and diamonds, not real scenes." in status
    )
    table_rows = int(page.locator("#instances [role=grid]").get_attribute("aria-rowcount")) - 1  # minus the header
    assert table_rows >= 1
    links = page.locator("#downloads a[download]")
    names = [links.nth(k).get_attribute("download") for k in range(links.count())]
    assert names == ["shapes_duet_avis.mp4", "shapes_duet_avis_results.json", "shapes_duet_avis_masks.zip"]
    results = page.request.get(links.nth(1).get_attribute("href")).json()
    assert len(results) == table_rows
    assert all(len(entry["segmentations"]) == 9 for entry in results)
    # the embedded model answered: the notice above the result says what it knows
    assert "This answer is the embedded sounding-shapes model's." in page.inner_text("#notice")
    assert page.locator("#objects input[type=checkbox]").count() == table_rows
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_by_default_the_page_offers_the_default_model_only_and_says_how_to_serve_a_real_avism(page):
    page.goto(page.app_url)
    config = page.evaluate("() => window.gradio_config")
    (model,) = [c for c in config["components"] if c.get("props", {}).get("elem_id") == "model"]
    assert model["props"]["choices"] == [["Default model", "Default model"]]
    assert "Local folder" not in page.content() and "python -m conversion.convert_avism" in page.content()


def test_leaving_the_page_stops_its_analysis_within_seconds(page, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "1")  # as app.py sets it (2 s)
    long = write_video(tmp_path / "left_behind.mp4", width=320, height=240, fps=24, num_frames=672)
    caplog.set_level(logging.INFO, logger="app")
    visitor = page.context.browser.new_page()
    visitor.goto(page.app_url)
    visitor.locator("#input-video input[type=file]").set_input_files(str(long))
    visitor.locator("#input-video video").wait_for(state="attached")
    visitor.locator("#fps input[type=number]").fill("10")
    visitor.locator("#fps input[type=number]").press("Enter")
    visitor.click("#run-button")
    deadline = time.monotonic() + 60
    while "analysis of left_behind.mp4 started" not in caplog.text:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1)
    visitor.close()
    left = time.monotonic()
    while "analysis of left_behind.mp4 ended" not in caplog.text:
        assert time.monotonic() - left < 10, "the analysis went on after the visitor left"
        time.sleep(0.1)
    assert time.monotonic() - left < 6 and "(cancelled)" in caplog.text


# The page's progress line ends with the running stage and how far the analysis is ("... · Rendering: 82 %").
PROGRESS = re.compile(r"(?P<stage>[A-Z][a-z ]+): (?P<percent>\d+) %$")


def test_a_60_s_analysis_shows_its_stages_and_how_far_it_is(page, tmp_path):
    minute = write_video(tmp_path / "minute.mp4", width=640, height=360, fps=24, num_frames=24 * 60, hold=24)
    open_and_upload(page, minute)
    seen, deadline = [], time.monotonic() + 300
    # the overlay may start playing a moment before the last progress text comes
    while not (page.evaluate(OVERLAY_READY) and seen and seen[-1] == "Done: 100 %"):
        assert time.monotonic() < deadline, f"no overlay or no end after 300 s; the page showed {seen}"
        text = page.inner_text("#progress").strip()
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        time.sleep(0.1)
    stages = [match.group("stage") for text in seen if (match := PROGRESS.search(text))]
    print(f"the progress line showed {len(seen)} texts, the stages {list(dict.fromkeys(stages))}")
    assert len(set(stages) - {"Done"}) >= 3, seen
    percents = [int(PROGRESS.search(text).group("percent")) for text in seen if PROGRESS.search(text)]
    assert percents == sorted(percents) and len(set(percents)) >= 5 and seen[-1] == "Done: 100 %"
    SCREENSHOT.parent.mkdir(exist_ok=True)


def test_unticking_an_object_draws_the_page_again_without_it(page):
    open_and_upload(page, EXAMPLE)
    page.wait_for_function(OVERLAY_READY, timeout=120_000)
    before = page.locator("#overlay-video video").get_attribute("src")
    labels = page.locator("#objects label")
    assert labels.count() == 2 and page.locator("#frame-view img").count() >= 1
    labels.nth(1).click()
    page.wait_for_function(
        f"() => document.querySelector('#overlay-video video')?.getAttribute('src') !== {before!r}", timeout=60_000
    )
    page.wait_for_function(OVERLAY_READY, timeout=60_000)
    links = page.locator("#downloads a[download]")
    results = page.request.get(links.nth(1).get_attribute("href")).json()
    assert len(results) == 1


def test_corrupt_upload_shows_its_error_in_the_page(page, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    open_and_upload(page, corrupt)
    message = page.get_by_text(
        "corrupt.mp4: not a video FFmpeg can read; the file may be corrupt, truncated or of another kind (Invalid data found when processing input)"
    )
    message.first.wait_for(state="visible")
    assert "Traceback" not in page.content()
