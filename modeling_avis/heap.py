"""The process's heap under glibc's malloc: kept for reuse within an inference pass, given back between passes.
Both are no-ops without glibc."""

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    library = ctypes.util.find_library("c")
    libc = ctypes.CDLL(library) if library else None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def reuse_freed_memory() -> None:
    """Makes glibc keep freed memory for reuse instead of returning it to the system at once.

    Inference frees and reallocates tensors of up to tens of MB for every frame; by default glibc maps each afresh
    and the kernel zero-fills it page by page (the original spends as much time in the kernel as in its own code).
    Kept in the heap, they are reused: about 8 % less time at 2-frame chunks. Blocks of 64 MB and more (the
    mask-feature store's) are still mapped and returned when freed: kept, the memory each
    stage leaves behind added up, to 3.02 GB at the peak of a 150-frame video whose features are partly computed
    again, against 2.54 GB so. It changes the whole process, so the command line does it, not the library.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, 64 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)


def release_freed_memory() -> None:
    """Gives the heap's free memory back to the system (`malloc_trim`), in every thread's arena.

    Between two passes over a video: each pass's threads free what it allocated, but the memory stays in their
    arenas (with `reuse_freed_memory`, up to 1 GB of it), where the next pass, run by other threads or with other
    sizes, reuses little of it: the first pass's frames run on the encoding workers, the clip module on the calling
    thread, the second pass's replays on the workers again. Given back, each pass's peak no longer adds to the next's:
    at T=600 (R50, 360p) the clip module's phase peaked at 2.42 GB with the first pass's memory kept, 1.99 GB so.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
