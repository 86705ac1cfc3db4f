"""How a process runs inference, set once by every entry point (the command line, the app, training and evaluation,
the benchmarks), so that what the benchmarks measure is what every user runs:

    configure_runtime(threads=None)   # at the start of a process, before any model runs

- torch's CPU threads: `threads`, by default every CPU this process may use. The video segmenter encodes that many
  frames side by side, one thread each (`AvisVideoSegmenter`'s `cpu_threads` defaults to torch's thread count).
- glibc's malloc keeps freed memory for reuse instead of handing it back at once (`heap.reuse_freed_memory`); the
  segmenter gives it back between its passes (`heap.release_freed_memory`).
"""

import torch

from .entry_point import CPUS
from .heap import reuse_freed_memory


def configure_runtime(threads: int | None = None) -> int:
    """Applies the process's runtime settings (see the module docstring); returns its thread count."""
    threads = threads or CPUS
    torch.set_num_threads(threads)
    reuse_freed_memory()
    return threads


__all__ = ["configure_runtime"]
