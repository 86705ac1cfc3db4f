"""After an analysis, in the served app through gradio_client: the checklist of found objects draws the overlay and
the downloads again without the model, the frame viewer shows a sampled frame with the results' masks, the masks zip
holds the results' masks; a run is its visitor's only; the embedded shapes model's answers carry a notice."""

import io
import json
import time
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app.layout import EMBEDDED_NOTICE, EXAMPLE_FOLDER, build_demo
from app.pipeline import GONE, AnalysisService
from app.settings import AppSettings
from app.uploads import UploadLedger
from modeling_avis.errors import AvisInputError
from modeling_avis.inference_avis import AvisVideoSegmenter
from modeling_avis.tracks import decode_mask

from .app_media import decode_rgb, write_video
from .app_server import serve_app

EXAMPLE = EXAMPLE_FOLDER / "shapes_duet.mp4"  # 9 s: a sounding square and diamond, and a silent circle
OUTPUTS = ("overlay", "status", "table", "timeline", "downloads", "objects", "legend", "frame", "view", "notice")


@pytest.fixture(scope="module")
def model_calls():
    """The model's runs (AvisVideoSegmenter calls) in this module's server."""
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        real = AvisVideoSegmenter.__call__

        def counted(self, *args, **kwargs):
            calls.append(args[0] if args else kwargs.get("video"))
            return real(self, *args, **kwargs)

        patch.setattr(AvisVideoSegmenter, "__call__", counted)
        yield calls


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_folder, model_calls):
    """The app, offering besides the default a tiny random AVISM ("tiny", threshold 0: it keeps what it finds)."""
    models = tmp_path_factory.mktemp("models")
    (models / "tiny").symlink_to(tiny_model_folder)
    with serve_app(tmp_path_factory.mktemp("runs"), local_models=models) as url:
        yield url


def new_client(url: str, folder: Path) -> Client:
    return Client(url, verbose=False, analytics_enabled=False, download_files=str(folder))


def analysed(client: Client, video: Path, model: str, threshold: float, instances: int) -> dict:
    outputs = client.predict(handle_file(str(video)), model, 1, threshold, instances, api_name="/analyse")
    return dict(zip(OUTPUTS, outputs, strict=False))


@pytest.fixture(scope="module")
def duet(served, tmp_path_factory):
    client = new_client(served, tmp_path_factory.mktemp("duet"))
    return client, analysed(client, EXAMPLE, "Default model", 0.6, 10)


def download(outputs: dict, suffix: str) -> Path:
    (path,) = [Path(path) for path in outputs["downloads"] if path.endswith(suffix)]
    return path


def test_the_masks_zip_holds_one_png_per_object_and_sampled_frame_equal_to_the_results_json(duet):
    _, outputs = duet
    entries = json.loads(download(outputs, ".json").read_text())
    classes = [row[1] for row in outputs["table"]["data"]]
    assert classes == ["square", "diamond"]
    with zipfile.ZipFile(download(outputs, "_masks.zip")) as archive:
        assert json.loads(archive.read("timestamps.json")) == [float(second) for second in range(9)]
        assert sum(name.endswith(".png") for name in archive.namelist()) == 2 * 9
        for number, (entry, name) in enumerate(zip(entries, classes, strict=True), 1):
            for k, rle in enumerate(entry["segmentations"]):
                png = np.asarray(Image.open(io.BytesIO(archive.read(f"{number:02d}_{name}/frame_{k:05d}.png"))))
                assert png.shape == (288, 384) and set(np.unique(png)) <= {0, 255}
                mask = decode_mask(rle)
                assert mask.sum() > 500 and np.array_equal(png == 255, mask)


def test_the_frame_viewer_shows_sampled_frame_k_with_the_results_masks_at_k(duet):
    client, outputs = duet
    entries = json.loads(download(outputs, ".json").read_text())
    labels = [label for label, _ in outputs["objects"]["choices"]]
    assert outputs["frame"]["maximum"] == 8 and [a["label"] for a in outputs["view"]["value"]["annotations"]] == labels
    source = decode_rgb(EXAMPLE)
    for k in (0, 4, 8):
        view = client.predict([1, 2], k, api_name="/show_frame")
        picture = np.asarray(Image.open(view["value"]["image"]).convert("RGB")).astype(int)
        errors = [np.abs(picture - frame).mean() for frame in source]
        assert np.argmin(errors) == k and errors[k] < 3  # the source frame at k (a JPEG of it)
        annotations = view["value"]["annotations"]
        assert [annotation["label"] for annotation in annotations] == labels
        for annotation, entry in zip(annotations, entries, strict=True):
            layer = np.asarray(Image.open(annotation["image"]).convert("RGBA"))
            mask = decode_mask(entry["segmentations"][k])
            assert mask.any() and np.array_equal(layer[..., 3] > 0, mask)
            # filled in the object's overlay colour, its outline opaque
            colour = view["color_map"][annotation["label"]]
            assert (layer[mask][:, :3] == [int(colour[i : i + 2], 16) for i in (1, 3, 5)]).all()
            assert 0 < (layer[..., 3] == 255).sum() < mask.sum() / 2


def test_the_embedded_models_answer_carries_a_notice_of_what_it_knows_and_another_models_does_not(
    served, duet, tmp_path
):
    _, outputs = duet
    assert outputs["notice"] == {"__type__": "update", "visible": True, "value": EMBEDDED_NOTICE}
    assert "knows four synthetic shapes" in EMBEDDED_NOTICE
    client = new_client(served, tmp_path)
    tiny = analysed(client, EXAMPLE, "tiny", 0.05, 2)
    assert tiny["notice"]["visible"] is False


def test_the_real_clips_are_offered_only_where_a_real_model_may_answer_them(tmp_path, tiny_model_folder):
    def example_labels(settings: AppSettings) -> list[str]:
        demo = build_demo(settings, UploadLedger(settings))
        return [block.label for block in demo.blocks.values() if type(block).__name__ == "Dataset"]

    only_embedded = example_labels(AppSettings(work_folder=tmp_path / "a"))
    assert only_embedded == ["Sounding shapes (for the embedded sounding-shapes model)"]
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny").symlink_to(tiny_model_folder)
    with_a_real_one = example_labels(AppSettings(local_models=models, work_folder=tmp_path / "b"))
    assert with_a_real_one[1] == "Real clips (for a real AVISM, not the embedded shapes model; ACVIS clips, MIT)"


def frames_at(path: Path, indices: set[int]) -> dict[int, np.ndarray]:
    with av.open(str(path)) as container:
        return {
            index: frame.to_ndarray(format="rgb24")
            for index, frame in enumerate(container.decode(video=0))
            if index in indices
        }


def test_unticking_one_of_two_objects_redraws_a_60_s_clip_without_it_and_without_the_model(
    served, model_calls, tmp_path
):
    clip = write_video(tmp_path / "minute.mp4", width=640, height=360, fps=24, num_frames=24 * 60, hold=24)
    client = new_client(served, tmp_path / "downloads")
    runs_before = len(model_calls)
    first = analysed(client, clip, "tiny", 0.05, 2)
    assert len(model_calls) == runs_before + 1 and [value for _, value in first["objects"]["choices"]] == [1, 2]
    before = json.loads(download(first, ".json").read_text())
    # the server's answer, as the page gets it: links to the new files (the page plays the video as it comes)
    page = Client(served, verbose=False, analytics_enabled=False, download_files=False)
    page.session_hash = client.session_hash  # the same visitor
    start = time.perf_counter()
    *_, progress = page.predict([1], api_name="/show_objects")
    seconds = time.perf_counter() - start
    # its speed is measured by benchmarks/bench_app_redraw.py; here only a bound a stalled redraw would pass
    assert seconds < 60 and len(model_calls) == runs_before + 1  # no model run
    assert progress == "**Done: 100 %**"
    overlay, downloads, _ = client.predict([1], api_name="/show_objects")  # the same, downloaded
    # the downloads follow: the JSON and the zip hold object 1 only, as it was
    after = dict(zip(("overlay", "downloads"), (overlay, downloads), strict=True))
    assert json.loads(download(after, ".json").read_text()) == before[:1]
    with zipfile.ZipFile(download(after, "_masks.zip")) as archive:
        folders = {name.split("/")[0] for name in archive.namelist() if name.endswith(".png")}
    assert len(folders) == 1 and next(iter(folders)).startswith("01_")
    # the frame viewer follows
    view = client.predict([1], 30, api_name="/show_frame")
    assert [annotation["label"] for annotation in view["value"]["annotations"]] == [first["objects"]["choices"][0][0]]
    # the overlay: object 2's pixels (where object 1 is not) are the source's again, object 1's still painted
    k = 30
    shown, hidden = (decode_mask(entry["segmentations"][k]) for entry in before)
    only_hidden = hidden & ~shown
    assert only_hidden.sum() > 1000 and shown.sum() > 1000
    (source,), (old,), (new,) = (
        frames_at(path, {24 * k}).values() for path in (clip, Path(first["overlay"]), Path(overlay))
    )
    change = {name: np.abs(image.astype(int) - source).sum(-1) for name, image in (("old", old), ("new", new))}
    assert change["old"][only_hidden].mean() > 30 and change["new"][only_hidden].mean() < 8
    assert change["new"][shown].mean() > 30


def test_a_run_is_its_visitors_only(served, duet, tmp_path, tiny_model_folder):
    stranger = new_client(served, tmp_path / "stranger")
    # another session's page holds no run, and no object to name
    with pytest.raises(AppError, match=r"Value: 1 \(type: <class 'int'>\) is not in the list of choices: \[\]"):
        stranger.predict([1, 2], api_name="/show_objects")
    with pytest.raises(AppError, match="Analyse a video first."):
        stranger.predict([], api_name="/show_objects")
    # and in the service, a run is given to the session that made it only, and while it is kept
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny").symlink_to(tiny_model_folder)
    service = AnalysisService(AppSettings(local_models=models, kept_results=1, work_folder=tmp_path / "runs"))
    source = write_video(tmp_path / "clip.mp4", num_frames=24, fps=12)
    run = service.analyse(str(source), "tiny", 1.0, 0.0, 2, lambda f, d: None, session="mine").run
    assert service.frame(run, "mine", [1], 0)[1]
    for ask in (
        lambda: service.frame(run, "theirs", [1], 0),
        lambda: service.view(run, "theirs", [1], lambda f, d: None),
        lambda: service.source(run, "theirs"),
        lambda: service.frame("run-0-deadbeef", "mine", [1], 0),
    ):
        with pytest.raises(AvisInputError, match=GONE):
            ask()
    service.view(run, "mine", [1], lambda f, d: None)
    service.view(run, "mine", [2], lambda f, d: None)
    assert len(list((service.runs.root / run).glob("view-*"))) == 1  # a redraw replaces the one before
    service.analyse(str(source), "tiny", 1.0, 0.0, 2, lambda f, d: None, session="mine")  # only 1 run is kept
    with pytest.raises(AvisInputError, match=GONE):
        service.frame(run, "mine", [1], 0)
