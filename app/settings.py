"""What the operator of a public server decides, with safe defaults: every setting has a command-line flag and an
environment variable (a Space sets the variables on its settings page).

By default a visitor sees only the default model (no folder of the server's, no Hub id), videos are analysed up to
60 s (picture and sound alike), one at a time with 16 waiting at most, and at most 8 results are kept, for 30 min. A
visitor may upload 20 files and 1 GB in 10 min, uploads are kept 10 min, and all of them together take at most 4 GB.
"""

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from gradio.utils import get_upload_folder

from modeling_avis.__main__ import default_model


@dataclass(frozen=True)
class AppSettings:
    """default_model: the folder or Hub id visitors get by default (a Space points it at a converted AVISM).
    local_models: a folder whose model folders visitors may pick by name (None: none; no path is ever typed).
    hub_models: the Hub ids visitors may pick ("*": any id, typed), each loaded only if its files take at most
        `hub_max_bytes` (read from the Hub before any download).
    model_load_seconds: how long a request waits for a model's first load (which goes on in the background).
    max_video_seconds: videos (and their sound) are analysed and drawn up to this many seconds, by their decoded
        times (never by the length a header declares).
    concurrency_limit, queue_size: analyses running at once, and waiting at most.
    max_upload_size: the largest upload, in gradio's notation.
    visitor_uploads, visitor_upload_bytes: the files and bytes one visitor may upload within `upload_seconds`.
    upload_seconds: how long an upload is kept (unless an analysis reads it then), and the window in which a
        visitor's uploads are counted.
    upload_total_bytes: the uploads kept on disk, every visitor's together.
    proxy_hops: the proxies in front of the server (a Space: 1), whose `X-Forwarded-For` says who the visitor is
        (0: the connection's address); see `app.uploads`.
    kept_results, result_seconds: the analyses whose files are kept (the newest), and for how long.
    work_folder: where the runs' files go: inside gradio's cache, so that gradio serves them without a copy.
    """

    default_model: str = field(default_factory=default_model)
    local_models: Path | None = None
    hub_models: tuple[str, ...] = ()
    hub_max_bytes: int = 2_000_000_000
    model_load_seconds: float = 120.0
    max_video_seconds: float = 60.0
    concurrency_limit: int = 1
    queue_size: int = 16
    max_upload_size: str = "500mb"
    visitor_uploads: int = 20
    visitor_upload_bytes: int = 1_000_000_000
    upload_seconds: int = 600
    upload_total_bytes: int = 4_000_000_000
    proxy_hops: int = 0
    kept_results: int = 8
    result_seconds: int = 1800
    work_folder: Path = field(default_factory=lambda: Path(get_upload_folder()) / "avis")


# Each setting's flag and variable, with how its text is read.
VARIABLES = {
    "default_model": ("AVIS_DEFAULT_MODEL", str),
    "local_models": ("AVIS_LOCAL_MODELS", Path),
    "hub_models": ("AVIS_HUB_MODELS", lambda text: tuple(name.strip() for name in text.split(",") if name.strip())),
    "hub_max_bytes": ("AVIS_HUB_MAX_BYTES", int),
    "model_load_seconds": ("AVIS_MODEL_LOAD_SECONDS", float),
    "max_video_seconds": ("AVIS_MAX_SECONDS", float),
    "concurrency_limit": ("AVIS_CONCURRENCY", int),
    "queue_size": ("AVIS_QUEUE_SIZE", int),
    "max_upload_size": ("AVIS_MAX_UPLOAD_SIZE", str),
    "visitor_uploads": ("AVIS_VISITOR_UPLOADS", int),
    "visitor_upload_bytes": ("AVIS_VISITOR_UPLOAD_BYTES", int),
    "upload_seconds": ("AVIS_UPLOAD_SECONDS", int),
    "upload_total_bytes": ("AVIS_UPLOAD_TOTAL_BYTES", int),
    "proxy_hops": ("AVIS_PROXY_HOPS", int),
    "kept_results": ("AVIS_KEPT_RESULTS", int),
    "result_seconds": ("AVIS_RESULT_SECONDS", int),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting (`--max-video-seconds`, ...); unset flags fall back to the variable, then the default."""
    for name, (variable, kind) in VARIABLES.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=kind, default=None, help=f"(default: ${variable}, else safe)"
        )


def settings_from(args: argparse.Namespace) -> AppSettings:
    values = {}
    for name, (variable, kind) in VARIABLES.items():
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
        elif os.environ.get(variable):
            values[name] = kind(os.environ[variable])
    return AppSettings(**values)


__all__ = ["AppSettings", "add_arguments", "settings_from"]
