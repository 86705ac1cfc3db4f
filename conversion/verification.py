"""Run a converted model on the original's captured inputs and compare every captured stage.

An io file (`io_*.safetensors`, the layout of the reference fixtures) holds the original's inputs
(`input.images` uint8 (T, 3, H, W), `input.audio` (T, 128), `input.out_hw`) and its outputs at every stage.
Tolerances follow the fixtures' advice: floats within 1e-4 x max(1, max |original|); labels and top-k index sets
exact; final masks equal but for at most 0.1 % of the pixels (logits at 0 may flip).
"""

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from modeling_avis.errors import AvisInputError, printable
from modeling_avis.post_processing_avis import select_instances
from modeling_avis.processing_avis import AvisProcessor, AvisVideoMetadata
from modeling_avis.tracks import AvisVideoResult, decode_mask

FLOAT_TOLERANCE = 1e-4
MASK_FLIP_TOLERANCE = 1e-3
# Inputs, and integer bookkeeping of the original that our code derives instead of storing.
NOT_COMPARED = {
    "input.images",
    "input.audio",
    "input.out_hw",
    "predictor.audio_features_in",
    "avism.in.audio_features",
    "pixel_decoder.spatial_shapes",
    "pixel_decoder.level_start_index",
    "final.image_size",
    "nocut.interim_size",
    "nocut.image_size",
    # the mask score's numerator and denominator: folded into nocut.pred_scores, which is compared
    "nocut.mask_numerator",
    "nocut.mask_denominator",
}
# The original's clip-module encoders pad the video to whole windows, (T_padded, fQ, LB, C): the padded frames'
# values are never used, so only the real frames are compared.
WINDOW_PADDED = {"avism.encode_frame_query_out", "avism.encode_av_fusion_out"}


class _Recorder:
    """Forward hooks that collect the outputs of chosen submodules over all frame chunks."""

    def __init__(self):
        self.outputs = defaultdict(list)
        self.handles = []

    def watch(self, name: str, module: torch.nn.Module):
        self.handles.append(module.register_forward_hook(lambda _m, _i, output: self.outputs[name].append(output)))

    def remove(self):
        for handle in self.handles:
            handle.remove()


def run_with_stages(model, processor: AvisProcessor, images: torch.Tensor, audio: torch.Tensor, out_hw) -> dict:
    """Our counterpart of every stage the fixtures capture, named as in their manifests: the model's forward on the
    original mapper's frames (normalised and padded by `processor`), and the processor's post-processing."""
    base = model.model if hasattr(model, "model") else model
    config = base.config
    image_processor = processor.image_processor
    pixel_values = image_processor.pad(image_processor.normalize(images))
    recorder = _Recorder()
    recorder.watch("backbone", base.backbone)
    recorder.watch("pixel_decoder", base.pixel_decoder)
    recorder.watch("frame_decoder", base.frame_decoder)
    recorder.watch("audio_projection", base.frame_decoder.audio_projection)
    recorder.watch("audio_fusion", base.frame_decoder.audio_fusion)
    recorder.watch("clip_audio_projection", base.clip_module.audio_projection)
    for level, layer in enumerate(base.frame_decoder.audio_attention_layers):
        recorder.watch(f"audio_attention{level}", layer)
    for index, layer in enumerate(base.pixel_decoder.encoder_layers):
        recorder.watch(f"encoder_layer{index}", layer)
    try:
        with torch.no_grad():
            # every frame-decoder layer's predictions are captured too (the auxiliary outputs), and the clip
            # module's window encoders' outputs
            output = base(pixel_values[None], audio[None], output_auxiliary_logits=True, output_hidden_states=True)
    finally:
        recorder.remove()
    captured = {name: values for name, values in recorder.outputs.items()}

    def cat(name, pick=lambda x: x, dim=0):
        return torch.cat([pick(value) for value in captured[name]], dim=dim)

    stages = {f"backbone.res{i + 2}": cat("backbone", lambda x, i=i: x[i]) for i in range(4)}
    for index in range(len(base.pixel_decoder.encoder_layers)):
        stages[f"pixel_decoder.encoder_layer{index}_out"] = cat(f"encoder_layer{index}")
    stages["pixel_decoder.encoder_memory"] = stages[f"pixel_decoder.encoder_layer{index}_out"]
    stages["pixel_decoder.mask_features"] = cat("pixel_decoder", lambda x: x.mask_features)
    stages["pixel_decoder.clip_mask_features"] = cat("pixel_decoder", lambda x: x.fpn_features)
    for level in range(config.num_feature_levels):
        stages[f"pixel_decoder.multi_scale_features.{level}"] = cat(
            "pixel_decoder", lambda x, level=level: x.multi_scale_features[level]
        )
    stages["pixel_decoder.transformer_encoder_features"] = stages["pixel_decoder.multi_scale_features.0"]
    # the original's frame decoder is sequence-first: (fQ, BT, C)
    stages["predictor.av_pre_proj_out"] = cat("audio_projection")
    for level in range(config.num_feature_levels):
        stages[f"predictor.av_sf{level}_out"] = cat(f"audio_attention{level}").transpose(0, 1)
    stages["predictor.av_post_proj_out"] = cat("audio_fusion").transpose(0, 1)
    frame_logits = [cat("frame_decoder", lambda x, i=i: x.class_logits[i]) for i in range(config.decoder_layers + 1)]
    stages["predictor.pred_logits"] = frame_logits[-1]
    stages["predictor.pred_masks"] = cat("frame_decoder", lambda x: x.mask_logits[-1])
    for index, logits in enumerate(frame_logits[:-1]):
        stages[f"predictor.aux{index}.pred_logits"] = logits
    stages["predictor.frame_queries"] = output.frame_queries
    stages["avism.in.frame_query"] = output.frame_queries
    stages["avism.mask_features"] = output.mask_features[0]
    stages["avism.av_proj_out"] = cat("clip_audio_projection")[0]
    # At inference the original runs the clip module on the last frame-decoder layer alone (L = 1); with the
    # auxiliary outputs ours runs it on each of the last L, independently: the last one is the original's.
    clip = output.clip_output
    stages["avism.encode_frame_query_out"] = clip.encoded_frame_queries[-1, 0][:, :, None]
    stages["avism.encode_av_fusion_out"] = clip.audio_visual_features[-1, 0][:, :, None]
    stages["avism.pred_logits"] = clip.class_logits[-1, -1:]
    stages["avism.pred_mask_embed"] = clip.mask_embeddings[-1, -1:]
    stages["avism.pred_fq_embed"] = clip.frame_query_embeddings[-1:]
    stages["avism.pred_cq_embed"] = clip.clip_query_embeddings[-1, -1:]

    image_size = tuple(images.shape[-2:])
    metadata = AvisVideoMetadata(
        timestamps=[float(t) for t in range(len(images))],
        original_size=tuple(out_hw),
        image_size=image_size,
        padded_size=tuple(pixel_values.shape[-2:]),
    )
    class_logits = output.class_logits[0]
    candidates = select_instances(class_logits, output.mask_embeddings[0], processor.num_detections)
    (everything,) = processor.post_process_video_instance_segmentation(output, [metadata], threshold=-math.inf)
    (kept,) = processor.post_process_video_instance_segmentation(output, [metadata])
    stages["nocut"] = {
        **_instances_of(everything, config.num_labels),
        "topk_query_indices": torch.tensor([track.query_index for track in everything.tracks]),
        "topk_class_scores": candidates.scores,
        "topk_class_indices": candidates.topk_indices,
        "class_probs": class_logits.softmax(-1)[:, :-1],
    }
    stages["final"] = _instances_of(kept, config.num_labels)
    return stages


def _instances_of(result: AvisVideoResult, num_labels: int) -> dict[str, torch.Tensor]:
    """The tracks of a post-processed video as the fixtures store instances: flat top-k index (query x classes +
    class), score, label and masks (N, T, H, W)."""
    tracks = result.tracks
    masks = [np.stack([decode_mask(rle) for rle in track.segmentations]) for track in tracks]
    return {
        "topk_flat_indices": torch.tensor([track.query_index * num_labels + track.label for track in tracks]),
        "pred_scores": torch.tensor([track.score for track in tracks]),
        "pred_labels": torch.tensor([track.label for track in tracks]),
        "pred_masks": torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, dtype=torch.bool),
    }


def _float_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |ours - reference| relative to the reference's scale when that exceeds 1."""
    if ours.shape != reference.shape:
        return math.inf
    scale = max(1.0, reference.abs().max().item()) if reference.numel() else 1.0
    return ((ours.float() - reference.float()).abs().max().item() / scale) if reference.numel() else 0.0


def _reorder(ours_keys: torch.Tensor, reference_keys: torch.Tensor) -> torch.Tensor | None:
    """Positions in ours of the reference's keys (top-k runs unsorted in the original), or None if sets differ."""
    position = {int(key): index for index, key in enumerate(ours_keys.tolist())}
    if set(position) != set(reference_keys.tolist()):
        return None
    return torch.tensor([position[int(key)] for key in reference_keys.tolist()], dtype=torch.long)


def compare_stages(stages: dict, reference: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Per captured tensor: the error measure, its tolerance, and whether it passed."""
    results = {}

    def record(name, error, tolerance):
        results[name] = {"error": error, "tolerance": tolerance, "passed": error <= tolerance}

    for name, value in stages.items():
        if isinstance(value, torch.Tensor) and name in reference:
            expected = reference[name][: value.shape[0]] if name in WINDOW_PADDED else reference[name]
            record(name, _float_error(value, expected), FLOAT_TOLERANCE)

    nocut, final = stages["nocut"], stages["final"]
    width = int(reference["input.out_hw"][1])
    order = _reorder(nocut["topk_flat_indices"], reference["nocut.topk_flat_indices"])
    record("nocut.topk_flat_indices", 0.0 if order is not None else 1.0, 0.0)
    if order is not None:
        record(
            "nocut.pred_scores",
            _float_error(nocut["pred_scores"][order], reference["nocut.pred_scores"]),
            FLOAT_TOLERANCE,
        )
        for key in ("pred_labels", "topk_query_indices"):
            same = torch.equal(nocut[key][order], reference[f"nocut.{key}"])
            record(f"nocut.{key}", 0.0 if same else 1.0, 0.0)
        masks = nocut["pred_masks"][order].numpy()
        reference_masks = np.unpackbits(reference["nocut.pred_masks_packbits"].numpy(), axis=-1, count=width).astype(
            bool
        )
        record("nocut.pred_masks_packbits", float((masks != reference_masks).mean()), MASK_FLIP_TOLERANCE)
        sums = torch.from_numpy(masks.sum(axis=(2, 3)))
        flipped = (sums - reference["nocut.pred_masks_sum"]).abs().sum().item() / max(1, reference_masks.size)
        record("nocut.pred_masks_sum", flipped, MASK_FLIP_TOLERANCE)
    class_order = _reorder(stages["nocut"]["topk_class_indices"], reference["nocut.topk_flat_indices"])
    if class_order is not None:
        record(
            "nocut.topk_class_scores",
            _float_error(nocut["topk_class_scores"][class_order], reference["nocut.topk_class_scores"]),
            FLOAT_TOLERANCE,
        )
    record("nocut.class_probs", _float_error(nocut["class_probs"], reference["nocut.class_probs"]), FLOAT_TOLERANCE)

    reference_kept = reference["nocut.topk_flat_indices"][reference["nocut.pred_scores"] > 0.3]
    final_order = _reorder(final["topk_flat_indices"], reference_kept)
    record("final.topk_set", 0.0 if final_order is not None else 1.0, 0.0)
    if final_order is not None:
        # the original's final outputs follow its unsorted top-k order; the kept subset of it
        record(
            "final.pred_scores",
            _float_error(final["pred_scores"][final_order], reference["final.pred_scores"]),
            FLOAT_TOLERANCE,
        )
        same = torch.equal(final["pred_labels"][final_order], reference["final.pred_labels"])
        record("final.pred_labels", 0.0 if same else 1.0, 0.0)
        flipped = (final["pred_masks"][final_order] != reference["final.pred_masks"]).float().mean().item()
        record("final.pred_masks", flipped, MASK_FLIP_TOLERANCE)
    return results


def compare_with_original(model, processor: AvisProcessor, io_path: str | Path, verbose: bool = True) -> dict:
    """Run `model` and `processor` on an io file's inputs; {"passed": bool, "stages": {name: {error, tolerance,
    passed}}}."""
    try:
        reference = load_file(str(io_path))
    except SafetensorError as error:
        raise AvisInputError(f"{printable(io_path)}: not a safetensors io file ({error})") from None
    if "input.images" not in reference:
        raise AvisInputError(
            f"{printable(io_path)}: not an io file of the original's captured stages (no input.images)"
        )
    out_hw = tuple(int(v) for v in reference["input.out_hw"])
    stages = run_with_stages(model, processor, reference["input.images"], reference["input.audio"], out_hw)
    results = compare_stages(stages, reference)
    missing = sorted(set(reference) - set(results) - NOT_COMPARED)
    for name in missing:
        results[name] = {"error": math.inf, "tolerance": 0.0, "passed": False, "note": "not compared"}
    if verbose:
        print(f"{Path(io_path).name}: {len(results)} stages")
        for name, result in sorted(results.items()):
            flag = "ok  " if result["passed"] else "FAIL"
            print(f"  {flag} {name:45s} {result['error']:.3e} (tolerance {result['tolerance']:.0e})")
    return {"passed": all(result["passed"] for result in results.values()), "stages": results}
