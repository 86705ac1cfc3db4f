"""training/train.py end to end on a tiny synthetic AVISeg split, in-process with Accelerate on the CPU."""

import json

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

from modeling_avis.errors import AvisCheckpointError
from modeling_avis.modeling_avis import AvisForAudioVisualInstanceSegmentation
from training import train

from .conftest import tiny_config
from .synthetic_aviseg import EVAL_VIDEOS, TRAIN_VIDEOS, write_split

LABELS = {0: "red", 1: "blue"}


@pytest.fixture(scope="module")
def aviseg_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("aviseg")
    write_split(root, "train", TRAIN_VIDEOS)
    write_split(root, "val", EVAL_VIDEOS)
    tiny_config(id2label=LABELS, train_num_points=64).to_json_file(root / "config.json")
    return root


@pytest.fixture(autouse=True)
def one_thread_and_fresh_accelerate_state():
    # Tiny ops on 2 shared cores run an order of magnitude faster single-threaded.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def train_args(root, output_dir, *extra: str) -> list[str]:
    """Clips of 2 frames at the stored 64x64 (no crop; flips on), 2 per step, no checkpoints unless asked."""
    return [
        "--config", str(root / "config.json"), "--data", str(root), "--output-dir", str(output_dir),
        "--num-frames", "2", "--min-sizes", "64", "--max-size", "64", "--crop-probability", "0",
        "--num-workers", "0", "--checkpointing-steps", "0", "--logging-steps", "50", "--report-to", "none",
        *extra,
    ]  # fmt: skip


def test_training_halves_the_loss_on_a_tiny_dataset(aviseg_root, tmp_path):
    # The recipe's optimizer as is (lr 1e-4, clipping at 0.01, backbone x0.1), 200 steps of 2 clips.
    history = train.train(train_args(aviseg_root, tmp_path, "--max-train-steps", "200", "--lr-steps"))
    losses = np.array([record["loss"] for record in history])
    assert len(losses) == 200
    assert all(np.isfinite(record[key]) for record in history for key in train.LOSS_GROUPS + ("grad_norm",))
    first, last = losses[:10].mean(), losses[-10:].mean()
    assert last < 0.5 * first, (first, last)
    assert (tmp_path / "model.safetensors").is_file()


def test_resumed_run_repeats_the_uninterrupted_losses(aviseg_root, tmp_path):
    # 1 clip x 2 accumulated per step, 4 clips: 2 steps per epoch; the checkpoint of step 3 is mid-epoch.
    common = ("--max-train-steps", "8", "--batch-size", "1", "--gradient-accumulation-steps", "2",
              "--checkpointing-steps", "3", "--lr-steps", "5", "--warmup-factor", "0.1", "--warmup-iters", "4")  # fmt: skip
    uninterrupted = train.train(train_args(aviseg_root, tmp_path / "a", *common))
    AcceleratorState._reset_state(reset_partial_state=True)
    stopped = train.train(train_args(aviseg_root, tmp_path / "b", *common, "--max-steps-this-run", "5"))
    progress = json.loads((tmp_path / "b/checkpoints/step_00000003" / train.PROGRESS_FILE).read_text())
    assert (progress["step"], progress["epoch"], progress["batches_in_epoch"]) == (3, 1, 2)
    assert not (tmp_path / "b/checkpoints/step_00000006").exists()
    AcceleratorState._reset_state(reset_partial_state=True)
    resumed = train.train(train_args(aviseg_root, tmp_path / "b", *common, "--resume-from-checkpoint", "latest"))

    def losses(history):
        return {record["step"]: [record[key] for key in train.LOSS_GROUPS + ("lr",)] for record in history}

    reference = losses(uninterrupted)
    assert list(losses(stopped)) == [1, 2, 3, 4, 5]
    assert list(losses(resumed)) == [4, 5, 6, 7, 8]
    for step, values in {**losses(stopped), **losses(resumed)}.items():
        np.testing.assert_allclose(values, reference[step], rtol=0, atol=1e-5, err_msg=f"step {step}")
    # the schedule passed its milestone at step 5 (0-based 5 -> step 6) and warmed up before
    assert [round(reference[step][-1] / 1e-4, 6) for step in (1, 5, 6)] == [0.1, 1.0, 0.1]
    final_a, final_b = load_file(tmp_path / "a/model.safetensors"), load_file(tmp_path / "b/model.safetensors")
    assert max((final_a[key] - final_b[key]).abs().max().item() for key in final_a) <= 1e-6
    # the data position means the same only with the same processes and batch sizes
    AcceleratorState._reset_state(reset_partial_state=True)
    changed = [*common, "--resume-from-checkpoint", "latest", "--gradient-accumulation-steps", "1"]
    with pytest.raises(AvisCheckpointError, match="resume with the same processes and batch sizes"):
        train.train(train_args(aviseg_root, tmp_path / "b", *changed))


def test_clips_do_not_depend_on_the_number_of_data_workers(aviseg_root, tmp_path):
    runs = []
    for workers in ("0", "2"):
        args = train_args(aviseg_root, tmp_path / workers, "--max-train-steps", "3", "--num-workers", workers)
        runs.append([record["loss"] for record in train.train(args)])
        AcceleratorState._reset_state(reset_partial_state=True)
    assert runs[0] == runs[1]


def test_each_step_clips_the_whole_gradient_and_uses_the_recipe_parameter_groups(aviseg_root, tmp_path):
    seen = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        seen.append(
            {
                "grad_norm": torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item(),
                "groups": {g["name"]: (g["lr"], g["weight_decay"], len(g["params"])) for g in optimizer.param_groups},
            }
        )

    handle = register_optimizer_step_pre_hook(record)
    try:
        history = train.train(train_args(aviseg_root, tmp_path, "--max-train-steps", "2"))
    finally:
        handle.remove()
    assert len(seen) == 2
    for before, after in zip(history, seen, strict=True):
        assert before["grad_norm"] > 0.1  # the unclipped norm, logged
        assert after["grad_norm"] == pytest.approx(0.01, rel=1e-4)  # what AdamW sees
    groups = seen[0]["groups"]
    assert {name: (lr, decay) for name, (lr, decay, _) in groups.items()} == {
        "backbone": (pytest.approx(1e-5), 0.05),
        "head": (pytest.approx(1e-4), 0.05),
        "head_no_decay": (pytest.approx(1e-4), 0.0),
    }
    trainable = sum(p.requires_grad for p in AvisForAudioVisualInstanceSegmentation(tiny_config()).parameters())
    assert sum(count for _, _, count in groups.values()) == trainable


def test_fine_tuning_from_a_saved_model_evaluates_periodically_and_saves_the_result(aviseg_root, tmp_path):
    start = AvisForAudioVisualInstanceSegmentation(tiny_config(id2label=LABELS, train_num_points=64))
    start.save_pretrained(tmp_path / "start")
    args = train_args(aviseg_root, tmp_path / "out", "--max-train-steps", "2", "--eval-split", "val")
    args[:2] = ["--model", str(tmp_path / "start")]
    history = train.train([*args, "--eval-steps", "1", "--eval-short-edge", "64"])
    assert [record["step"] for record in history] == [1, 2]
    assert all(np.isfinite(record[key]) for record in history for key in train.LOSS_GROUPS)
    for step in (1, 2):
        metrics = json.loads((tmp_path / f"out/eval/step_{step:08d}/metrics.json").read_text())
        assert 0 <= metrics["FSLA"] <= 100 and 0 <= metrics["HOTA"] <= 100 and 0 <= metrics["mAP"] <= 100
    tuned = AvisForAudioVisualInstanceSegmentation.from_pretrained(tmp_path / "out")
    before = start.model.clip_module.class_predictor.weight
    after = tuned.model.clip_module.class_predictor.weight
    assert (after - before).abs().max().item() > 1e-6
    # fine-tuning keeps the visual features as they are by default (FROZEN_WHEN_FINE_TUNING)
    for part in ("backbone", "pixel_decoder"):
        kept, started = getattr(tuned.model, part).state_dict(), getattr(start.model, part).state_dict()
        assert all(torch.equal(kept[key], started[key]) for key in started)


def test_backbone_weights_go_with_a_new_model_only(aviseg_root, tmp_path):
    with pytest.raises(SystemExit):
        train.parse_args(["--model", "x", "--backbone-weights", "y", "--data", "d", "--output-dir", "o"])


def test_fine_tuning_freezes_the_visual_features_by_default_and_a_new_model_nothing():
    required = ["--data", "d", "--output-dir", "o"]
    assert train.parse_args(["--model", "m", *required]).freeze == ["backbone", "pixel_decoder"]
    assert train.parse_args(["--preset", "r50_imagenet", *required]).freeze == []
    assert train.parse_args(["--model", "m", "--freeze", *required]).freeze == []
    assert train.parse_args(["--model", "m", *required, "--freeze", "audio_encoder"]).freeze == ["audio_encoder"]


def test_the_help_says_every_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "67% of the steps" in " ".join(capsys.readouterr().out.split())
