"""Numba tunables (cache, fast-math), read at call time and overridable by environment variables.

- ``NUMRNN_CACHE``      1 (default) keeps compiled kernels on disk so later runs start fast; 0 turns it off.
- ``NUMRNN_CACHE_DIR``  where the kernel cache lives (default ``$XDG_CACHE_HOME/numrnn`` or
                        ``~/.cache/numrnn``). numrnn keys a subfolder by its version and a hash of the
                        kernel sources, so an upgrade or an edit never loads a stale kernel.
- ``NUMRNN_FASTMATH``   1 lets LLVM reorder float arithmetic in kernels (default 0).
"""

import hashlib
import os
from pathlib import Path

from numrnn import __version__

_KERNEL_DIR = Path(__file__).resolve().parent / "kernels"


def _flag(name, default):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def cache_enabled():
    return _flag("NUMRNN_CACHE", True)


def fastmath_enabled():
    return _flag("NUMRNN_FASTMATH", False)


def kernel_source_hash():
    """A short hash of every kernel source file: part of the cache key."""
    digest = hashlib.sha256()
    for path in sorted(_KERNEL_DIR.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def kernel_cache_dir():
    base = os.environ.get("NUMRNN_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
        base = os.path.join(xdg, "numrnn")
    return Path(base) / f"kernels-{__version__}-{kernel_source_hash()}"


def _usable_cache_dir():
    """The cache folder if it can be created and written, else None (caching then stays off)."""
    path = kernel_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        return None
    return path


def configure_numba():
    """Point numba's on-disk cache at numrnn's keyed folder; returns whether caching is on.

    Must run before any kernel module is imported: numba reads the folder when a function
    is decorated.
    """
    if not cache_enabled():
        return False
    path = _usable_cache_dir()
    if path is None:
        return False
    import numba.core.config

    numba.core.config.CACHE_DIR = str(path)
    return True


def jit_options(cache):
    """The options every CPU kernel is compiled with."""
    # error_model="numpy": no zero-division checks, which would stop loops from vectorising.
    return dict(cache=cache, error_model="numpy", fastmath=fastmath_enabled(), nogil=True)


def kernels_compiled(*names):
    """Whether numba's cache already holds the CPU kernels ``names`` (e.g. "lstm_forward").

    A hint for the CLI, which says "compiling" on a cold start; it only looks for the cache's
    index files, so it never loads numba.
    """
    if not cache_enabled():
        return False
    folder = kernel_cache_dir()
    return all(next(folder.glob(f"*/cpu.{name}-*.nbi"), None) is not None for name in names)
