"""The models a visitor may pick, and their loading: one seam between the app and the model.

A visitor names a model from the page's list: the default, a folder of the operator's models folder by its name,
or an allowed Hub id. Anything else, and anything that cannot be loaded, gets the same answer (`UNAVAILABLE`), so
that no visitor learns what the server's disk or the Hub holds; the server log has the details.

Each model loads once, in the background: a request waits at most `model_load_seconds` for it (the load goes on),
and no request ever waits behind another model's load.
"""

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

import httpx
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

from modeling_avis.__main__ import DEFAULT_MODEL_FOLDERS
from modeling_avis.errors import AvisError
from modeling_avis.inference_avis import AvisVideoSegmenter
from modeling_avis.loading import HUB_ID, load_config, load_processor

from .settings import AppSettings

logger = logging.getLogger(__name__)

UNAVAILABLE = "This model is not available on this server."
# The default's entry in the page's list.
DEFAULT_CHOICE = "Default model"
# Models kept loaded at once (an R50 AVISM is ~200 MB, a Swin-L one ~1 GB).
MAX_LOADED_MODELS = 2
# Seconds the Hub may take to say how large a model is.
HUB_TIMEOUT = 10.0


class ModelUnavailable(AvisError):
    """The model a visitor named is not one this server offers, or could not be loaded."""

    def __init__(self):
        super().__init__(UNAVAILABLE)


class ModelStillLoading(AvisError):
    """The model's first load takes longer than a request waits for it."""


@dataclass(frozen=True)
class LoadedModel:
    segmenter: AvisVideoSegmenter
    summary: str  # one line of its model card: what the model is


class ModelCatalog:
    """The models of `settings` visitors may pick: `choices()`, and `load(choice)` -> LoadedModel."""

    def __init__(self, settings: AppSettings):
        self.settings = settings
        self._loads: dict[str, Future] = {}
        self._loads_lock = threading.Lock()  # guards the dict only, never held while a model loads
        self._loader = ThreadPoolExecutor(MAX_LOADED_MODELS, thread_name_prefix="avis-model-load")

    def choices(self) -> list[str]:
        """The page's list: the default, the operator's model folders by name, the allowed Hub ids."""
        local = self.settings.local_models
        folders = sorted(path.name for path in local.iterdir() if (path / "config.json").is_file()) if local else []
        return [DEFAULT_CHOICE, *folders, *(name for name in self.settings.hub_models if name != "*")]

    def name(self, choice: str) -> str:
        """How the result names the model: the default's folder name or Hub id, the folder's name, the Hub id."""
        if choice == DEFAULT_CHOICE:
            return f"{Path(self.settings.default_model).name} (the default)"
        return choice

    def default_threshold(self) -> float:
        """The default model's score threshold (the page's starting value), from its processor's config."""
        location = self.settings.default_model
        return load_processor(location, load_config(location)).score_threshold

    def is_embedded(self, choice: str) -> bool:
        """Whether the choice is the embedded sounding-shapes model (which knows shapes, not real scenes)."""
        try:
            location = self.location(choice)
        except ModelUnavailable:
            return False
        return any(Path(location).resolve() == folder.resolve() for folder in DEFAULT_MODEL_FOLDERS)

    def offers_a_real_model(self) -> bool:
        """Whether a visitor may pick a model other than the embedded one (a converted AVISM, say)."""
        return len(self.choices()) > 1 or self.accepts_typed_hub_ids() or not self.is_embedded(DEFAULT_CHOICE)

    def accepts_typed_hub_ids(self) -> bool:
        return "*" in self.settings.hub_models

    def location(self, choice: str) -> str:
        """Where the chosen model is; ModelUnavailable for any choice the server does not offer."""
        choice = (choice or "").strip()
        if choice == DEFAULT_CHOICE:
            return self.settings.default_model
        local = self.settings.local_models
        if local and choice in self.choices() and (local / choice).is_dir():
            return str(local / choice)
        allowed = choice in self.settings.hub_models or self.accepts_typed_hub_ids()
        if allowed and HUB_ID.match(choice) and not Path(choice).exists():
            return choice
        logger.info("refused the model choice %r", choice)
        raise ModelUnavailable()

    def load(self, choice: str) -> LoadedModel:
        """The chosen model, loaded once per process (MAX_LOADED_MODELS kept); ModelStillLoading when its first
        load takes more than `model_load_seconds`; ModelUnavailable when it cannot be loaded."""
        location = self.location(choice)
        with self._loads_lock:
            future = self._loads.get(location)
            if future is None or (future.done() and future.exception() is not None):
                future = self._loads[location] = self._loader.submit(self._load, location, choice)
                for stale in list(self._loads)[:-MAX_LOADED_MODELS]:
                    self._loads.pop(stale)
        try:
            return future.result(timeout=self.settings.model_load_seconds)
        except FutureTimeout:
            raise ModelStillLoading(
                f"The model is still loading (the first load takes more than {self.settings.model_load_seconds:g} s); "
                "try again in a minute."
            ) from None

    def _load(self, location: str, choice: str) -> LoadedModel:
        try:
            if choice != DEFAULT_CHOICE and HUB_ID.match(location) and not Path(location).exists():
                self._check_hub_size(location)
            segmenter = AvisVideoSegmenter.from_pretrained(location)
            return LoadedModel(segmenter, model_summary(location))
        except (AvisError, OSError, HfHubHTTPError, httpx.HTTPError) as error:
            logger.warning("could not load the model %r: %s", location, error)
            raise ModelUnavailable() from None

    def _check_hub_size(self, repo_id: str) -> None:
        info = HfApi().model_info(repo_id, files_metadata=True, timeout=HUB_TIMEOUT)
        size = sum(sibling.size or 0 for sibling in info.siblings or [])
        if size > self.settings.hub_max_bytes:
            raise OSError(f"{repo_id} has {size} bytes of files, over the limit of {self.settings.hub_max_bytes}")


def model_summary(location: str) -> str:
    """The first sentence of the model card's first paragraph (after its metadata and title)."""
    folder = Path(location)
    try:
        card = folder / "README.md" if folder.is_dir() else Path(hf_hub_download(location, "README.md"))
        text = card.read_text()
    except (OSError, HfHubHTTPError, httpx.HTTPError):
        return "A model without a model card."
    if text.startswith("---"):
        text = text.split("---", 2)[-1]
    paragraphs = [part.strip() for part in text.split("\n\n") if part.strip() and not part.lstrip().startswith("#")]
    if not paragraphs:
        return "A model whose card says nothing of it."
    first = " ".join(paragraphs[0].split())
    return first.split(". ")[0].rstrip(".") + "."


__all__ = ["DEFAULT_CHOICE", "UNAVAILABLE", "LoadedModel", "ModelCatalog", "ModelStillLoading", "ModelUnavailable"]
