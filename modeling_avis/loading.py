"""Loading an AVISM folder or Hub id, with everything that can be wrong with it said in one line.

    model = load_model("path/or/owner-name")                      # AvisForAudioVisualInstanceSegmentation
    model = load_model("path/or/owner-name", AvisModel, device="cuda")

A missing folder, a folder without config.json, another model type, an invalid config, missing or corrupt weights,
weights that do not fit the config, or a pickle that would run code: each is an AvisCheckpointError naming the
folder, with no report or traceback around it.
"""

import contextlib
import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from transformers.utils import logging as transformers_logging

from .configuration_avis import AvisConfig
from .errors import AvisCheckpointError, one_line
from .modeling_avis import AvisForAudioVisualInstanceSegmentation, AvisPreTrainedModel
from .processing_avis import LEGACY_PROCESSOR_FIELDS, AvisProcessor

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# What loading a folder of bad files raises, from transformers, safetensors and torch.load (whose weights-only
# unpickler, fed bytes that are no pickle, also fails with IndexError or KeyError).
LOADING_ERRORS = (
    OSError,
    ValueError,
    RuntimeError,
    EOFError,
    IndexError,
    KeyError,
    SafetensorError,
    pickle.UnpicklingError,
)


def load_config(name: str | Path) -> AvisConfig:
    """The AVISM config of a model folder or Hub id."""
    name = str(name)
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise AvisCheckpointError(f"{name}: no config.json there; give a folder written by save_pretrained")
    elif not HUB_ID.match(name):
        raise AvisCheckpointError(f"{name}: there is no such model folder, and it is not a Hub id (owner/name)")
    try:
        config_dict, _ = AvisConfig.get_config_dict(name)
    except LOADING_ERRORS as error:
        raise AvisCheckpointError(f"{name}: the model's config could not be read ({one_line(error)})") from None
    if config_dict.get("model_type") != AvisConfig.model_type:
        raise AvisCheckpointError(f"{name}: a {config_dict.get('model_type')!r} model, not an AVISM one")
    try:
        return AvisConfig.from_pretrained(name)
    except StrictDataclassError as error:
        raise AvisCheckpointError(f"{name}: config.json is not a valid AVISM config ({_last_line(error)})") from None


def load_config_file(path: str | Path) -> AvisConfig:
    """An AvisConfig from a JSON file of its fields (as `config.to_json_file` writes it)."""
    try:
        return AvisConfig.from_json_file(path)
    except (OSError, ValueError) as error:
        raise AvisCheckpointError(f"{path}: not a readable AvisConfig JSON ({one_line(error)})") from None
    except StrictDataclassError as error:
        raise AvisCheckpointError(f"{path}: not a valid AVISM config ({_last_line(error)})") from None


def load_model(
    name: str | Path,
    model_class: type[AvisPreTrainedModel] = AvisForAudioVisualInstanceSegmentation,
    device: str | torch.device | None = None,
) -> AvisPreTrainedModel:
    """The model of a folder written by `save_pretrained` (of AvisModel or of the segmentation model) or of a Hub
    id, as `model_class`, on `device` (the CPU when None). On CUDA the deformable attention runs the Hub's kernel,
    or the PyTorch path when it cannot be fetched. Every weight must be in the checkpoint, with its config's shape.
    """
    name = str(name)
    config = load_config(name)
    device = torch.device("cpu" if device is None else device)
    try:
        with _quiet_transformers():
            model, info = model_class.from_pretrained(
                name,
                config=config,
                use_kernels=device.type == "cuda",
                device_map=device,
                ignore_mismatched_sizes=True,  # reported below, in one line
                output_loading_info=True,
            )
    except SafetensorError as error:
        raise AvisCheckpointError(f"{name}: its safetensors weights are corrupt or truncated ({error})") from None
    except pickle.UnpicklingError as error:
        raise unpickling_error(f"{name}: its pytorch_model.bin", error) from None
    except LOADING_ERRORS as error:
        raise AvisCheckpointError(f"{name}: the model's weights could not be loaded ({one_line(error)})") from None
    if info["mismatched_keys"]:
        key, found, expected = sorted(info["mismatched_keys"])[0]
        raise AvisCheckpointError(
            f"{name}: its weights do not fit its config.json: {len(info['mismatched_keys'])} have other shapes "
            f"(first: {key} is {tuple(found)}, the config gives {tuple(expected)})"
        )
    missing = info["missing_keys"]
    if missing:
        raise AvisCheckpointError(
            f"{name}: the checkpoint lacks {len(missing)} of the model's weights (first: {sorted(missing)[0]})"
        )
    return model


def load_processor(name: str | Path, config: AvisConfig) -> AvisProcessor:
    """The processor saved with the model; a folder or Hub id without one gets the one the original tested such a
    model with (`AvisProcessor.for_model`). Settings a processor saved before they were its own are read from the
    model's config, as are those of a folder without a processor."""
    name = str(name)
    folder = Path(name)
    if folder.is_dir() and not (folder / "processor_config.json").is_file():
        return AvisProcessor.for_model(config)
    try:
        processor = AvisProcessor.from_pretrained(name)
        saved = AvisProcessor.get_processor_dict(name)[0]
    except LOADING_ERRORS as error:
        if not folder.is_dir():  # a Hub model without a processor of its own
            return AvisProcessor.for_model(config)
        raise AvisCheckpointError(f"{name}: its processor_config.json could not be read ({one_line(error)})") from None
    for key in LEGACY_PROCESSOR_FIELDS:
        if key not in saved and hasattr(config, key):
            setattr(processor, key, getattr(config, key))
    return processor


def unpickling_error(what: str, error: pickle.UnpicklingError) -> AvisCheckpointError:
    """What `torch.load(weights_only=True)` refused, in one line: a file that names code to run (a pickle GLOBAL
    outside the allowed tensor types), or one that is not a PyTorch file at all."""
    if "global" in str(error).lower():
        return AvisCheckpointError(f"{what} holds more than tensors (loading it would run code), so it was not loaded")
    return AvisCheckpointError(f"{what} is not a readable PyTorch file (not a pickle of tensors)")


def _last_line(error: StrictDataclassError) -> str:
    """The reason of a strict config's validation error: its message names the field or check on its last line."""
    return str(error).strip().splitlines()[-1].strip()


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' own warnings and progress bars off while loading: a checkpoint that does not fit is said in
    one line (AvisCheckpointError), not in transformers' report of every key."""
    previous, progress_bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(previous)
        if progress_bars:
            transformers_logging.enable_progress_bar()


__all__ = [
    "HUB_ID",
    "LOADING_ERRORS",
    "load_config",
    "load_config_file",
    "load_model",
    "load_processor",
    "unpickling_error",
]
