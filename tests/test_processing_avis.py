import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from modeling_avis.configuration_avis import SWIN_L_BACKBONE, AvisConfig
from modeling_avis.errors import AvisInputError
from modeling_avis.feature_extraction_avis import AvisFeatureExtractor
from modeling_avis.image_processing_avis import AvisImageProcessor
from modeling_avis.modeling_avis import AvisModelOutput
from modeling_avis.processing_avis import AvisProcessor, AvisVideoMetadata
from modeling_avis.video_io import read_audio, read_frames

from .fixture_data import MEDIA
from .synthetic_media import frame_value, write_video, write_wav

CLIP = MEDIA / "dogs_640x360.mp4"
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


def test_clip_becomes_exactly_the_model_inputs_with_the_metadata_beside_them():
    inputs = AvisProcessor()(CLIP)
    assert sorted(inputs) == ["audio_log_mel", "pixel_values"]
    assert inputs["pixel_values"].shape == (1, 5, 3, 384, 640) and inputs["pixel_values"].dtype == torch.float32
    assert inputs["audio_log_mel"].shape == (1, 5, 96, 64) and inputs["audio_log_mel"].dtype == torch.float32
    assert inputs.video_metadata == [
        AvisVideoMetadata([0.0, 1.0, 2.0, 3.0, 4.0], (360, 640), (360, 640), (384, 640), True, 24.0, [])
    ]
    # A 360p frame is not resized: pixel_values is the decoded frame normalised, then 24 rows of zeros.
    frame = torch.from_numpy(list(read_frames(CLIP))[3].image).permute(2, 0, 1).float()
    torch.testing.assert_close(inputs["pixel_values"][0, 3, :, :360], (frame - MEAN) / STD)
    assert inputs["pixel_values"][0, :, :, 360:].abs().max() == 0
    # Frame k's audio is the second [k, k + 1) of the track.
    audio = read_audio(CLIP)
    second_two = AvisFeatureExtractor().log_mel(torch.from_numpy(audio.samples[32000:47600]).double()).float()
    torch.testing.assert_close(inputs["audio_log_mel"][0, 2], second_two)


def test_native_rate_and_limits():
    processor = AvisProcessor()
    assert processor(CLIP, fps="native", max_frames=30)["pixel_values"].shape[1] == 30
    assert processor(CLIP, fps=2.0, max_duration=2.0).video_metadata[0].timestamps == [0.0, 0.5, 1.0, 1.5]


def test_precomputed_audio_features_replace_the_log_mel(tmp_path):
    features = np.random.default_rng(0).standard_normal((7, 128)).astype(np.float32)
    np.save(tmp_path / "dogs.npy", features)
    for given in (features, tmp_path / "dogs.npy"):
        inputs = AvisProcessor()(CLIP, audio_features=given)
        assert "audio_log_mel" not in inputs
        torch.testing.assert_close(inputs["audio_features"], torch.from_numpy(features[None, :5]))
        assert inputs.video_metadata[0].notes == ["the audio features have 7 rows: the first 5 were used"]


def test_too_few_audio_features_are_refused():
    with pytest.raises(AvisInputError, match="the audio features cover 3 frames but the video has 5"):
        AvisProcessor()(CLIP, audio_features=np.zeros((3, 128), np.float32))


def test_video_without_audio_gets_silence_and_says_so(tmp_path):
    path = write_video(tmp_path / "mute.mp4", num_frames=48, fps=24)
    inputs = AvisProcessor()(path)
    assert not inputs.video_metadata[0].has_audio and inputs["audio_log_mel"].shape == (1, 2, 96, 64)
    torch.testing.assert_close(inputs["audio_log_mel"], torch.full((1, 2, 96, 64), math.log(0.01)))
    assert inputs.video_metadata[0].notes == ["mute.mp4 has no audio track: every frame was given silence"]


def test_seconds_after_the_audio_ends_get_the_all_zero_example_as_in_the_original(tmp_path):
    path = write_video(tmp_path / "short.mp4", num_frames=96, fps=24, audio_seconds=1.5)
    inputs = AvisProcessor()(path)
    log_mel = inputs["audio_log_mel"][0]
    assert [bool(example.abs().max() > 0) for example in log_mel] == [True, False, False, False]
    (note,) = inputs.video_metadata[0].notes
    assert inputs.video_metadata[0].has_audio and note.startswith("the audio covers 0.00-1.5")
    assert note.endswith(
        "3 of 4 frames were given the all-zero example of a too short piece of sound, as in the original's features"
    )


def _aviseg_split(tmp_path, with_features=False, with_wav=False):
    frames_dir = tmp_path / "test" / "JPEGImages" / "vid01"
    frames_dir.mkdir(parents=True)
    for k in range(3):
        Image.fromarray(np.full((48, 64, 3), frame_value(k), np.uint8)).save(frames_dir / f"{k:05d}.jpg")
    if with_features:
        (tmp_path / "test" / "FEATAudios").mkdir()
        np.save(tmp_path / "test" / "FEATAudios" / "vid01.npy", np.ones((3, 128), np.float32))
    if with_wav:
        (tmp_path / "test" / "WAVAudios").mkdir()
        write_wav(tmp_path / "test" / "WAVAudios" / "vid01.wav", 3.0)
    return frames_dir


def test_aviseg_frame_folder_reads_its_features_beside_it(tmp_path):
    inputs = AvisProcessor()(_aviseg_split(tmp_path, with_features=True))
    assert inputs["pixel_values"].shape == (1, 3, 3, 384, 480)
    assert inputs.video_metadata[0].timestamps == [0.0, 1.0, 2.0] and inputs.video_metadata[0].original_size == (
        48,
        64,
    )
    torch.testing.assert_close(inputs["audio_features"], torch.ones(1, 3, 128))
    grey = (frame_value(2) - MEAN[0, 0, 0]) / STD[0, 0, 0]
    assert abs(inputs["pixel_values"][0, 2, 0, 100, 100].item() - grey.item()) < 1.5 / 58.395  # JPEG rounding


def test_aviseg_frame_folder_reads_its_wav_beside_it(tmp_path):
    inputs = AvisProcessor()(_aviseg_split(tmp_path, with_wav=True))
    assert inputs["audio_log_mel"].shape == (1, 3, 96, 64) and inputs.video_metadata[0].has_audio
    assert all(example.abs().max() > 0 for example in inputs["audio_log_mel"][0])


def test_frame_folder_without_sound_says_so(tmp_path):
    inputs = AvisProcessor()(_aviseg_split(tmp_path), max_frames=2)
    assert not inputs.video_metadata[0].has_audio and inputs["audio_log_mel"].shape == (1, 2, 96, 64)
    assert inputs.video_metadata[0].notes == [
        "vid01 has no WAVAudios/vid01.wav beside it: every frame was given silence"
    ]


def test_frame_folder_needs_a_frame_rate(tmp_path):
    with pytest.raises(AvisInputError, match="vid01: a frame folder has no native rate"):
        AvisProcessor()(_aviseg_split(tmp_path), fps="native")


def test_non_positive_fps_is_refused():
    with pytest.raises(AvisInputError, match="fps must be positive, not 0.0"):
        AvisProcessor()(CLIP, fps=0)


def test_sampling_above_the_native_rate_is_noted(tmp_path):
    path = write_video(tmp_path / "slow.mp4", num_frames=6, fps=6)
    inputs = AvisProcessor()(path, fps=10.0)
    assert inputs["pixel_values"].shape[1] == 6
    assert inputs.video_metadata[0].notes[0] == "sampled at the video's native 6 fps (10 fps was asked)"


def test_save_and_load_round_trip_through_auto_processor(tmp_path):
    processor = AvisProcessor(
        AvisImageProcessor(shortest_edge=448), AvisFeatureExtractor(log_offset=0.02), fps=2.0, score_threshold=0.6
    )
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == "AvisProcessor" and saved["fps"] == 2.0 and saved["score_threshold"] == 0.6
    for loaded in (AvisProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is AvisProcessor and (loaded.fps, loaded.score_threshold) == (2.0, 0.6)
        assert type(loaded.image_processor) is AvisImageProcessor and loaded.image_processor.shortest_edge == 448
        assert type(loaded.feature_extractor) is AvisFeatureExtractor and loaded.feature_extractor.log_offset == 0.02
        assert loaded.image_processor.to_dict() | {"auto_map": None} == processor.image_processor.to_dict() | {
            "auto_map": None
        }


def test_processor_for_a_swin_model_uses_448_pixel_frames_and_reads_the_settings_old_configs_kept():
    assert AvisProcessor.for_model(AvisConfig(backbone_config=SWIN_L_BACKBONE)).image_processor.shortest_edge == 448
    legacy = AvisProcessor.for_model(AvisConfig(pixel_std=[1.0, 2.0, 3.0], score_threshold=0.6, num_detections=20))
    assert legacy.image_processor.shortest_edge == 360 and legacy.image_processor.image_std == [1.0, 2.0, 3.0]
    assert (legacy.score_threshold, legacy.num_detections, legacy.mask_chunk_size) == (0.6, 20, 5)


def test_post_processing_gives_tracks_at_the_source_size_with_the_inputs_metadata():
    inputs = AvisProcessor()(CLIP, max_frames=2)
    # query 1 is a guitar (label 2) whose mask features are positive on a 40 x 40 box of the stride-4 grid
    class_logits = torch.full((1, 3, 27), -10.0)
    class_logits[0, 1, 2], class_logits[0, 1, -1] = 10.0, -10.0
    mask_embeddings = torch.zeros(1, 3, 4)
    mask_embeddings[0, 1, 0] = 1.0
    mask_features = torch.full((1, 2, 4, 96, 160), -10.0)
    mask_features[0, :, 0, 10:20, 30:40] = 10.0
    outputs = AvisModelOutput(class_logits=class_logits, mask_embeddings=mask_embeddings, mask_features=mask_features)
    (result,) = AvisProcessor().post_process_video_instance_segmentation(
        outputs, inputs.video_metadata, AvisConfig().id2label
    )
    assert [(t.track_id, t.label_name, t.query_index) for t in result.tracks] == [(1, "guitar", 1)]
    assert result.tracks[0].score == pytest.approx(1.0, abs=0.01)  # the mask score's edges: sigmoid of the upsampling
    assert (result.height, result.width, result.fps, result.has_audio) == (360, 640, 24.0, True)
    np.testing.assert_array_equal(result.timestamps, [0.0, 1.0])
    mask = result.tracks[0].mask(1)
    assert mask.shape == (360, 640) and mask[42:78, 122:158].all() and mask.sum() < 42 * 42


def test_bad_media_reaches_the_caller_as_an_input_error(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video\n" * 20)
    with pytest.raises(AvisInputError, match="notes.mp4: not a video FFmpeg can read"):
        AvisProcessor()(tmp_path / "notes.mp4")


def test_audio_is_aligned_to_the_video_stream_start(tmp_path):
    # The video's first frame is shown at 0.5 s of the audio track: frame 0's audio second starts there.
    path = write_video(tmp_path / "late.mp4", num_frames=3, frame_times_ms=[500, 1500, 2500], audio_seconds=3.0)
    audio = read_audio(path)
    assert audio.start == pytest.approx(-0.5)
    inputs = AvisProcessor()(path, fps="native")
    assert inputs.video_metadata[0].timestamps == [0.0, 1.0, 2.0]
    from_half_second = AvisFeatureExtractor().log_mel(torch.from_numpy(audio.samples[8000:23600]).double()).float()
    torch.testing.assert_close(inputs["audio_log_mel"][0, 0], from_half_second)


def test_chunks_put_together_are_the_inputs_of_the_whole_video():
    processor = AvisProcessor()
    chunks = processor.iter_chunks(CLIP, chunk_frames=2)
    # Known before a frame is decoded:
    metadata = chunks.metadata()
    assert (metadata.original_size, metadata.image_size, metadata.padded_size) == ((360, 640), (360, 640), (384, 640))
    assert (metadata.has_audio, metadata.fps, chunks.expected_frames) == (True, 24.0, 5)
    parts = list(chunks)
    assert [len(part["pixel_values"]) for part in parts] == [2, 2, 1]
    assert chunks.metadata().timestamps == [0.0, 1.0, 2.0, 3.0, 4.0]
    whole = processor(CLIP)
    for name in ("pixel_values", "audio_log_mel"):
        assert torch.equal(torch.cat([part[name] for part in parts])[None], whole[name])
    assert chunks.metadata() == whole.video_metadata[0]


def test_chunks_read_again_decode_the_same_frames_and_keep_one_set_of_timestamps(tmp_path):
    processor = AvisProcessor()
    for video in (CLIP, _aviseg_split(tmp_path, with_features=False)):
        chunks = processor.iter_chunks(video, chunk_frames=2, fps=1.0)
        first, again = list(chunks), list(chunks)
        metadata = chunks.metadata()
        assert len(metadata.timestamps) == sum(len(part["pixel_values"]) for part in first)
        assert len(set(metadata.notes)) == len(metadata.notes)
        for one, other in zip(first, again, strict=True):
            assert all(torch.equal(one[name], other[name]) for name in one)


def test_chunks_of_a_frame_folder_carry_its_precomputed_features(tmp_path):
    chunks = AvisProcessor().iter_chunks(_aviseg_split(tmp_path, with_features=True), chunk_frames=2)
    assert chunks.metadata().original_size == (48, 64) and chunks.expected_frames == 3
    parts = list(chunks)
    assert [tuple(part["audio_features"].shape) for part in parts] == [(2, 128), (1, 128)]
    assert chunks.metadata().timestamps == [0.0, 1.0, 2.0] and chunks.metadata().notes == []


def test_too_few_audio_features_are_refused_while_streaming_with_the_videos_frame_count():
    chunks = AvisProcessor().iter_chunks(CLIP, chunk_frames=2, audio_features=np.zeros((3, 128), np.float32))
    with pytest.raises(AvisInputError, match="the audio features cover 3 frames but the video has 5"):
        list(chunks)


def test_a_rotated_video_has_its_upright_size_before_decoding(tmp_path):
    path = write_video(tmp_path / "phone.mp4", num_frames=24, size=(64, 48), rotation=90)
    chunks = AvisProcessor().iter_chunks(path)
    assert chunks.metadata().original_size == (64, 48)
    assert list(chunks)[0]["pixel_values"].shape[-2:] == chunks.metadata().padded_size == (480, 384)
