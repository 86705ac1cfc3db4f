"""Loading an AVISM folder or Hub id, with everything that can be wrong with it said in one line.

    model = load_model("path/or/owner-name")                      # AvisForAudioVisualInstanceSegmentation
    model = load_model("path/or/owner-name", AvisModel, device="cuda")

A missing folder, a folder without config.json, another model type, an invalid config (a value out of its range,
see `config_ranges`), missing or corrupt weights, weights that do not fit the config, a pickle that would run code
or that holds something other than tensors: each is an AvisCheckpointError naming the folder, with no report or
traceback around it. A folder's config.json and processor_config.json are read and checked before any weight is.
"""

import contextlib
import pickle
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from transformers.utils import logging as transformers_logging

from .config_ranges import shown
from .configuration_avis import AvisConfig
from .errors import AvisCheckpointError, one_line
from .input_files import MAX_CONFIG_BYTES, InvalidInputFile, read_json
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
        config_dict = _read_settings(folder / "config.json", f"{name}: the model's config could not be read")
    elif not HUB_ID.match(name):
        raise AvisCheckpointError(f"{name}: there is no such model folder, and it is not a Hub id (owner/name)")
    else:
        try:
            config_dict, _ = AvisConfig.get_config_dict(name)
        except LOADING_ERRORS as error:
            raise AvisCheckpointError(f"{name}: the model's config could not be read ({one_line(error)})") from None
        if not isinstance(config_dict, dict):
            raise AvisCheckpointError(f"{name}: its config.json holds {_kind(config_dict)}, not an object of settings")
    if config_dict.get("model_type") != AvisConfig.model_type:
        raise AvisCheckpointError(f"{name}: a {shown(config_dict.get('model_type'))} model, not an AVISM one")
    try:
        return AvisConfig.from_pretrained(name)
    except (StrictDataclassError, ValueError) as error:
        raise AvisCheckpointError(f"{name}: config.json is not a valid AVISM config ({_reason(error)})") from None


def load_config_file(path: str | Path) -> AvisConfig:
    """An AvisConfig from a JSON file of its fields (as `config.to_json_file` writes it)."""
    _read_settings(Path(path), f"{path}: not a readable AvisConfig JSON")
    try:
        return AvisConfig.from_json_file(path)
    except (StrictDataclassError, ValueError) as error:
        raise AvisCheckpointError(f"{path}: not a valid AVISM config ({_reason(error)})") from None


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
    if Path(name).is_dir():
        check_pickled_weights(Path(name), name)
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
    model's config, as are those of a folder without a processor. Its log-mel examples must be those the model's
    audio encoder reads."""
    name = str(name)
    folder = Path(name)
    if folder.is_dir() and not (folder / "processor_config.json").is_file():
        processor = processor_for_model(name, config)
    else:
        processor = _saved_processor(name, config)
    encoder, extractor = config.audio_config, processor.feature_extractor
    examples = (extractor.num_frames, extractor.num_mel_bins)
    if encoder is not None and examples != (encoder.num_frames, encoder.num_mel_bins):
        raise AvisCheckpointError(
            f"{name}: processor_config.json gives log-mel examples of {examples[0]} x {examples[1]}, the model's "
            f"audio encoder reads {encoder.num_frames} x {encoder.num_mel_bins}"
        )
    return processor


def _saved_processor(name: str, config: AvisConfig) -> AvisProcessor:
    """The processor saved in the folder or Hub repository `name`, its processor_config.json checked first."""
    folder = Path(name)
    if folder.is_dir():
        _check_processor_json(folder / "processor_config.json", name)
    try:
        saved = AvisProcessor.get_processor_dict(name)[0]
    except LOADING_ERRORS as error:
        if not folder.is_dir():  # a Hub model without a processor of its own
            return processor_for_model(name, config)
        raise AvisCheckpointError(f"{name}: its processor_config.json could not be read ({one_line(error)})") from None
    legacy = {
        key: getattr(config, key) for key in LEGACY_PROCESSOR_FIELDS if key not in saved and hasattr(config, key)
    }
    try:
        return AvisProcessor.from_pretrained(name, **legacy)
    except ValueError as error:
        raise AvisCheckpointError(
            f"{name}: processor_config.json is not a valid AVIS processor config ({one_line(error)})"
        ) from None


def processor_for_model(name: str, config: AvisConfig) -> AvisProcessor:
    """`AvisProcessor.for_model(config)` of the config of `name`, whose processor settings (of a folder saved before
    the processor held them) are its config.json's."""
    try:
        return AvisProcessor.for_model(config)
    except ValueError as error:
        raise AvisCheckpointError(
            f"{name}: its config's processor settings are not valid ({one_line(error)})"
        ) from None


def _read_settings(path: Path, unreadable: str) -> dict:
    """The JSON object of settings a config file holds; AvisCheckpointError `unreadable (the reason)` otherwise."""
    try:
        settings = read_json(path, MAX_CONFIG_BYTES)
    except InvalidInputFile as error:
        raise AvisCheckpointError(f"{unreadable} ({path.name}: {error})") from None
    if not isinstance(settings, dict):
        raise AvisCheckpointError(f"{unreadable} ({path.name} holds {_kind(settings)}, not an object of settings)")
    return settings


def _check_processor_json(path: Path, name: str) -> None:
    """processor_config.json read as a JSON object, with an object for each part it has."""
    saved = _read_settings(path, f"{name}: its processor_config.json could not be read")
    for part in ("image_processor", "feature_extractor"):
        if not isinstance(saved.get(part, {}), dict):
            raise AvisCheckpointError(f"{name}: processor_config.json's {part} is {_kind(saved[part])}, not an object")


def check_pickled_weights(folder: Path, name: str) -> None:
    """The pytorch_model.bin a folder's weights would be read from (one without model.safetensors) unpickled with
    `weights_only=True` and found to hold named tensors only: transformers indexes whatever it finds there."""
    path = folder / "pytorch_model.bin"
    if not path.is_file() or (folder / "model.safetensors").is_file():
        return
    try:
        # memory-mapped where it can be (torch.save's zip format): the check reads no weight
        state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        raise unpickling_error(f"{name}: its pytorch_model.bin", error) from None
    except LOADING_ERRORS as error:
        raise AvisCheckpointError(f"{name}: the model's weights could not be loaded ({one_line(error)})") from None
    tensors_only(state_dict, f"{name}: its pytorch_model.bin")


def tensors_only(state_dict: object, what: str) -> dict[str, torch.Tensor]:
    """`state_dict` once found to map names to tensors; a checkpoint holding anything else there (a string, a
    number, None, a list, a nested dict) is an AvisCheckpointError naming `what` and the first such entry."""
    if not isinstance(state_dict, dict):
        raise AvisCheckpointError(f"{what} holds {_kind(state_dict)}, not a state dict of named tensors")
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise AvisCheckpointError(f"{what} holds {_kind(value)} at {shown(key)}, not a tensor")
    return state_dict


def unpickling_error(what: str, error: pickle.UnpicklingError) -> AvisCheckpointError:
    """What `torch.load(weights_only=True)` refused, in one line: a file that names code to run (a pickle GLOBAL
    outside the allowed tensor types), or one that is not a PyTorch file at all."""
    if "global" in str(error).lower():
        return AvisCheckpointError(f"{what} holds more than tensors (loading it would run code), so it was not loaded")
    return AvisCheckpointError(f"{what} is not a readable PyTorch file (not a pickle of tensors)")


def _reason(error: Exception) -> str:
    """Why a config was refused, in one line: a strict config's validation error names the field or check on its
    last line, after the type of the error it wraps."""
    if not isinstance(error, StrictDataclassError):
        return one_line(error)
    return str(error).strip().splitlines()[-1].strip().removeprefix("ValueError: ").removeprefix("TypeError: ")


def _kind(value: object) -> str:
    """What a parsed file holds, for a message: 'a list', 'a string', 'an integer', ..."""
    kinds = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", type(None): "None"}
    return kinds.get(type(value), f"a {type(value).__name__}")


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
    "check_pickled_weights",
    "load_config",
    "load_config_file",
    "load_model",
    "load_processor",
    "processor_for_model",
    "tensors_only",
    "unpickling_error",
]
