"""Reading the original's PyTorch files (detectron2 checkpoints, torchvggish's weights) safely."""

import pickle
from pathlib import Path

import torch

from modeling_avis.errors import AvisCheckpointError, printable
from modeling_avis.loading import unpickling_error


def load_torch_file(path: str | Path) -> object:
    """What a `.pth` file holds, read with `weights_only=True` (tensors and plain containers only: a file that
    would run code to load is refused); AvisCheckpointError naming the file when it cannot be read."""
    if not Path(path).is_file():
        raise AvisCheckpointError(f"{printable(path)}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise unpickling_error(str(path), error) from None
    except Exception as error:  # torch's unpickler, fed bytes that are no pickle, fails in any way (IndexError ...)
        raise AvisCheckpointError(
            f"{printable(path)} is not a readable PyTorch file ({type(error).__name__})"
        ) from None


__all__ = ["load_torch_file"]
