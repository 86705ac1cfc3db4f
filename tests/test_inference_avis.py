"""Streaming inference: the two-pass path equals the one-shot path, the mask-feature store, the video segmenter."""

import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import pipeline

from modeling_avis import AvisForAudioVisualInstanceSegmentation, AvisModel, AvisProcessor, save_model_folder
from modeling_avis.errors import AvisCheckpointError
from modeling_avis.inference_avis import (
    AvisEncodingWorkers,
    AvisMaskFeatureStore,
    AvisVideoSegmenter,
    decode_video,
    encode_video,
    model_frame_chunks,
)
from modeling_avis.processing_avis import AvisVideoMetadata
from modeling_avis.session_avis import AvisFrameBlocks, AvisInferenceSession

from .conftest import TINY_VGGISH, converted_model, original_io_cases, tiny_config
from .fixture_data import MEDIA, ORIGINAL

CASES = original_io_cases()
CLIPS = sorted(MEDIA.glob("*.mp4"))


def same_tracks(streamed, expected) -> None:
    """Identical masks and labels, from the same clip queries, scores within float noise."""
    assert len(expected.tracks) > 0 and len(streamed.tracks) == len(expected.tracks)
    assert [(t.label, t.query_index) for t in streamed.tracks] == [(t.label, t.query_index) for t in expected.tracks]
    assert [t.segmentations for t in streamed.tracks] == [t.segmentations for t in expected.tracks]
    np.testing.assert_allclose(
        [t.score for t in streamed.tracks], [t.score for t in expected.tracks], rtol=0, atol=1e-6
    )


@pytest.fixture
def one_torch_thread():
    """Both paths on one torch thread: the frames encoded side by side by workers then run as they do in the one-shot
    path (a different thread count may change float sums in their last bits)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# Memory budgets in frames of mask features, and encoding workers: all spilled, spilled from the middle of a chunk,
# nothing spilled, nothing spilled with two chunks encoded at once.
SETTINGS = {"all-spilled": (0, 1), "spilled-from-frame-4": (4.5, 1), "in-memory": (None, 1), "two-workers": (None, 2)}


@pytest.mark.parametrize(("budget", "workers"), SETTINGS.values(), ids=SETTINGS.keys())
@pytest.mark.parametrize(("name", "io_file"), CASES, ids=[f"{name}-{io}" for name, io in CASES])
def test_streaming_gives_the_one_shot_results_on_every_fixture_case(name, io_file, budget, workers, one_torch_thread):
    model = converted_model(name).model
    processor = AvisProcessor.for_model(model.config)
    reference = load_file(str(ORIGINAL / name / io_file))
    images, audio = reference["input.images"], reference["input.audio"]
    pixel_values = processor.image_processor.pad(processor.image_processor.normalize(images))
    metadata = AvisVideoMetadata(
        timestamps=[float(t) for t in range(len(images))],
        original_size=tuple(int(v) for v in reference["input.out_hw"]),
        image_size=tuple(images.shape[-2:]),
        padded_size=tuple(pixel_values.shape[-2:]),
    )
    config = model.config
    with torch.inference_mode():
        # the straightforward path: the model on the whole video, then the post-processing on all mask features
        (expected,) = processor.post_process_video_instance_segmentation(
            model(pixel_values[None], audio[None]), [metadata]
        )
        # chunks of 3 frames: none lines up with the model's chunks of 18 frames or the masks' chunks of 5
        chunks = [
            {"pixel_values": pixel_values[start : start + 3], "audio_features": audio[start : start + 3]}
            for start in range(0, len(images), 3)
        ]
        frame_bytes = config.mask_feature_size * (pixel_values.shape[-2] // 4) * (pixel_values.shape[-1] // 4) * 4
        memory_budget = 1 << 40 if budget is None else int(budget * frame_bytes)
        with AvisMaskFeatureStore(memory_budget) as store:
            session = encode_video(model, chunks, AvisInferenceSession("offline", store), workers=workers)
            (streamed,) = processor.post_process_video_instance_segmentation(decode_video(model, session), [metadata])
            assert store.spilled_frames == (0 if budget is None else len(images) - int(budget))
    assert streamed.num_frames == len(images)
    same_tracks(streamed, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("budget_frames", [0, 3, 10])
def test_store_holds_at_most_its_budget_in_memory_and_reads_back_every_frame(tmp_path, budget_frames, dtype):
    frames = torch.randn(10, 4, 6, 8).to(dtype)
    frame_bytes = frames[0].numel() * frames.element_size()
    with AvisMaskFeatureStore(budget_frames * frame_bytes + frame_bytes // 2, directory=tmp_path) as store:
        for start, size in [(0, 4), (4, 1), (5, 5)]:
            store.append(frames[start : start + size])
            assert store.bytes_in_memory <= budget_frames * frame_bytes + frame_bytes // 2
        assert len(store) == 10 and store.spilled_frames == 10 - budget_frames
        assert store.bytes_in_memory == budget_frames * frame_bytes
        for start, stop in [(0, 10), (2, 7), (3, 4), (9, 10), (8, 30)]:
            assert torch.equal(store[start:stop], frames[start:stop])
    assert len(store) == 0 and store.bytes_in_memory == 0


@pytest.mark.parametrize(("memory_frames", "disk_frames"), [(0, 0), (3, 0), (0, 4), (2, 5), (10, 0)])
def test_store_computes_again_the_frames_past_its_disk_budget(tmp_path, memory_frames, disk_frames):
    frames = torch.randn(10, 4, 6, 8)
    frame_bytes = frames[0].numel() * frames.element_size()
    asked = []

    def recompute(start, stop):
        asked.append((start, stop))
        return frames[start:stop].clone()

    with AvisMaskFeatureStore(memory_frames * frame_bytes, disk_frames * frame_bytes, tmp_path, recompute) as store:
        for start, size in [(0, 4), (4, 1), (5, 5)]:
            store.append(frames[start : start + size])
        kept = min(10, memory_frames + disk_frames)
        assert (store.bytes_in_memory, store.bytes_on_disk) == (
            memory_frames * frame_bytes,
            min(disk_frames, 10 - memory_frames) * frame_bytes,
        )
        assert store.dropped_frames == 10 - kept and len(store) == 10
        for start, stop in [(0, 10), (2, 7), (6, 9), (9, 10)]:
            assert torch.equal(store[start:stop], frames[start:stop])
    assert asked == [(max(start, kept), stop) for start, stop in [(0, 10), (2, 7), (6, 9), (9, 10)] if stop > kept]


@pytest.mark.parametrize("fps", [2.0, 1.0], ids=["10-frames", "5-frames"])  # 5: the last runs on both threads
def test_frames_past_the_disk_budget_are_computed_again_from_the_video_to_the_same_tracks(tiny_model_folder, fps):
    clip = CLIPS[0]
    settings = {"device": "cpu", "memory_budget": 0, "cpu_threads": 2}
    unbounded = AvisVideoSegmenter.from_pretrained(tiny_model_folder, disk_budget=None, **settings)
    expected = unbounded(clip, fps=fps)
    assert expected.num_frames == 5 * fps
    bounded = AvisVideoSegmenter.from_pretrained(tiny_model_folder, disk_budget=1, **settings)
    chunks = bounded.processor.iter_chunks(clip, bounded.frame_chunk_size, fps=fps)
    with bounded.outputs(chunks) as outputs:
        store = outputs.mask_features[0]
        assert store.dropped_frames == len(store) == expected.num_frames and store.spilled_frames == 0
        (result,) = bounded.processor.post_process_video_instance_segmentation(
            outputs, [chunks.metadata()], bounded.model.config.id2label
        )
    same_tracks(result, expected)
    # a one-time iterator cannot be read again: its features all go to disk, whatever the budget
    with bounded.outputs(iter(list(chunks))) as outputs:
        assert outputs.mask_features[0].spilled_frames == expected.num_frames


def test_a_videos_last_chunks_fewer_than_the_workers_run_after_the_others_on_all_their_threads():
    runs = {}

    def encode(item):
        started = time.perf_counter()
        time.sleep(0.05)
        runs[item] = (torch.get_num_threads(), started, time.perf_counter())
        return item * 10

    with AvisEncodingWorkers(2) as workers:
        assert list(workers.map(encode, range(5))) == [0, 10, 20, 30, 40]
        assert {item: threads for item, (threads, _, _) in runs.items()} == {0: 1, 1: 1, 2: 1, 3: 1, 4: 2}
        assert runs[4][1] >= max(end for _, _, end in (runs[item] for item in range(4)))  # once the others ended
        # the same chunks given again, as the second pass computes them: on the same threads
        runs.clear()
        assert list(workers.map(encode, [3, 4], first_index=3, num_items=5)) == [30, 40]
        assert {item: threads for item, (threads, _, _) in runs.items()} == {3: 1, 4: 2}
        runs.clear()
        assert list(workers.map(encode, range(4))) == [0, 10, 20, 30]  # no tail
        assert {threads for threads, _, _ in runs.values()} == {1}
    with AvisEncodingWorkers(3) as workers:  # a tail of 2 on 3 cores: one thread each, as the others
        runs.clear()
        assert list(workers.map(encode, range(5))) == [0, 10, 20, 30, 40]
        assert {threads for threads, _, _ in runs.values()} == {1}


@pytest.mark.parametrize("capacity", [None, 10, 12])
def test_frame_blocks_read_back_every_slice_across_their_blocks(capacity):
    frames = torch.randn(10, 2, 3)
    blocks = AvisFrameBlocks(block_frames=3, capacity=capacity)
    for start, size in [(0, 4), (4, 1), (5, 5)]:
        blocks.append(frames[start : start + size])
    assert len(blocks) == 10 and blocks.room == (None if capacity is None else capacity - 10)
    for start, stop in [(0, 10), (2, 7), (3, 4), (3, 6), (9, 10), (8, 30), (0, 0)]:
        assert torch.equal(blocks[start:stop], frames[start:stop])
    if capacity is not None:
        with pytest.raises(ValueError, match="do not fit"):
            blocks.append(torch.randn(capacity - 9, 2, 3))


def test_store_refuses_frames_of_another_shape():
    with AvisMaskFeatureStore(0) as store:
        store.append(torch.zeros(2, 4, 6, 8))
        with pytest.raises(ValueError, match="mask features of shape"):
            store.append(torch.zeros(1, 4, 6, 9))


def test_model_frame_chunks_regroups_chunks_of_any_size_into_the_models_chunks():
    pixels, audio = torch.arange(11.0), torch.arange(11.0) * 10
    sizes = [1, 4, 2, 4]
    starts = np.cumsum([0, *sizes])[:-1]
    chunks = [{"pixel_values": pixels[a : a + n], "audio_features": audio[a : a + n]} for a, n in zip(starts, sizes)]
    regrouped = list(model_frame_chunks(chunks, 3))
    assert [chunk["pixel_values"].tolist() for chunk in regrouped] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10]]
    assert all(torch.equal(chunk["audio_features"], chunk["pixel_values"] * 10) for chunk in regrouped)


@pytest.mark.parametrize("clip", CLIPS, ids=[clip.stem for clip in CLIPS])
def test_segmenter_finds_tracks_in_a_real_clip_with_one_mask_per_sampled_frame(tiny_model_folder, clip):
    segmenter = AvisVideoSegmenter.from_pretrained(tiny_model_folder, device="cpu", memory_budget=0, cpu_threads=2)
    reports, threads = [], torch.get_num_threads()
    result = segmenter(clip, max_instances=3, progress=lambda fraction, stage: reports.append((fraction, stage)))
    assert torch.get_num_threads() == threads  # set for the call only
    height, width = AvisProcessor()(clip, max_frames=1).video_metadata[0].original_size
    assert (result.height, result.width) == (height, width) and result.has_audio
    np.testing.assert_array_equal(result.timestamps, [0.0, 1.0, 2.0, 3.0, 4.0])
    assert len(result.tracks) == 3 and [track.track_id for track in result.tracks] == [1, 2, 3]
    assert all(rle["size"] == [height, width] for track in result.tracks for rle in track.segmentations)
    assert all(len(track.segmentations) == 5 for track in result.tracks)
    assert [track.score for track in result.tracks] == sorted((track.score for track in result.tracks), reverse=True)
    assert reports[0] == (0.0, "Reading the audio") and reports[-1] == (1.0, "Done")
    assert [stage for stage in dict.fromkeys(stage for _, stage in reports)] == [
        "Reading the audio", "Decoding and encoding frames", "Drawing masks", "Done"
    ]  # fmt: skip
    assert [fraction for fraction, _ in reports] == sorted(fraction for fraction, _ in reports)


def test_segmenter_equals_the_processor_model_post_process_path_and_the_pipeline(tiny_model_folder, one_torch_thread):
    clip = CLIPS[0]
    segmenter = AvisVideoSegmenter.from_pretrained(tiny_model_folder, device="cpu", cpu_threads=1)
    result = segmenter(clip, fps=2.0)
    # the transformers way, on the same frames in the same chunks
    processor, model = AvisProcessor.from_pretrained(tiny_model_folder), AvisModel.from_pretrained(tiny_model_folder)
    model.config.frame_chunk_size = segmenter.frame_chunk_size
    inputs = processor(clip, fps=2.0)
    with torch.inference_mode():
        outputs = model.eval()(**inputs)
    (expected,) = processor.post_process_video_instance_segmentation(
        outputs, inputs.video_metadata, model.config.id2label
    )
    same_tracks(result, expected)
    assert [t.label_name for t in result.tracks] == [t.label_name for t in expected.tracks]
    # and through transformers' pipeline, from the folder
    segment = pipeline(model=str(tiny_model_folder), trust_remote_code=True, device="cpu")
    segment.segmenter.cpu_threads, segment.segmenter.frame_chunk_size = 1, segmenter.frame_chunk_size
    same_tracks(segment(str(clip), fps=2.0), result)


def test_segmenter_loads_a_training_model_folder_with_its_saved_processor(tmp_path):
    torch.manual_seed(0)
    model = AvisForAudioVisualInstanceSegmentation(tiny_config(audio_config=TINY_VGGISH))
    save_model_folder(tmp_path, model, AvisProcessor(fps=2.0))
    segmenter = AvisVideoSegmenter.from_pretrained(tmp_path, device="cpu")
    assert type(segmenter.model) is AvisModel and not segmenter.model.training
    assert segmenter.processor.fps == 2.0
    assert torch.equal(
        segmenter.model.clip_module.class_predictor.weight, model.model.clip_module.class_predictor.weight
    )


def test_a_folder_without_an_avism_model_is_a_one_line_checkpoint_error(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "resnet"}')
    cases = {
        tmp_path: "no config.json there",
        tmp_path / "missing": "there is no such model folder, and it is not a Hub id",
        tmp_path / "other": "a 'resnet' model, not an AVISM one",
    }
    for location, message in cases.items():
        with pytest.raises(AvisCheckpointError, match=message) as raised:
            AvisVideoSegmenter.from_pretrained(location, device="cpu")
        assert "\n" not in str(raised.value)
