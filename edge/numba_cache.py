"""Where Numba keeps the compiled signal kernels: one folder, set by a setting or ``EMOFUSE_NUMBA_CACHE``.

Every kernel in :mod:`edge.signals` is ``@njit(cache=True)``: compiled once, then loaded from
Numba's on-disk cache. By default Numba writes that cache beside the source files (or under
``~/.cache``), which a device with a read-only root file system does not allow, so it would
compile again at every boot (seconds, and extra memory). ``emofuse warmup`` compiles every
kernel into a chosen folder, and the runtime loads them from it.

The folder is chosen, in order, by ``emofuse --numba-cache DIR`` (the command-line setting),
the ``EMOFUSE_NUMBA_CACHE`` environment variable, or Numba's own ``NUMBA_CACHE_DIR``. Numba
decides where each kernel's cache lives when the kernel's module is imported, so the folder
must be set before that: ``import edge`` applies ``EMOFUSE_NUMBA_CACHE`` (it sets
``NUMBA_CACHE_DIR``), and the CLI applies ``--numba-cache`` before it loads any command.

Numba checks that the folder is writable even to read from it, and keys each entry by the
CPU model and the kernel's source, so the folder must be writable at run time (a data
partition, not the read-only root) and filled on the same kind of CPU (docs/DEPLOY.md).
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

ENV = "EMOFUSE_NUMBA_CACHE"
NUMBA_ENV = "NUMBA_CACHE_DIR"

log = logging.getLogger("emofuse.numba")


def use_numba_cache(folder: str | os.PathLike) -> Path:
    """Point Numba's on-disk kernel cache at ``folder`` (created if missing).

    Args:
        folder: the cache folder.

    Returns:
        The folder as an absolute path.

    Raises:
        ConfigError: the folder cannot be created or is not writable (Numba would silently
            fall back to compiling at every start).
    """
    from firmware_bridge.errors import ConfigError

    path = Path(folder).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Numba cache folder {path}: cannot create it ({exc.strerror or exc})") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"Numba cache folder {path} is not writable; Numba needs to write there even to "
                          "load kernels (put it on a writable data partition)")
    os.environ[NUMBA_ENV] = str(path)
    if "numba" in sys.modules:
        from numba.core import config

        config.CACHE_DIR = str(path)
    loaded = sorted(m for m in sys.modules if m.startswith("edge.signals."))
    if loaded:
        log.warning("Numba cache set to %s after %s were loaded; those keep their old cache", path,
                    ", ".join(loaded))
    return path


def numba_cache_dir() -> Path | None:
    """The folder Numba caches kernels in now, or None for Numba's default (beside the sources)."""
    value = os.environ.get(NUMBA_ENV)
    return Path(value) if value else None


def apply_environment() -> None:
    """Apply ``EMOFUSE_NUMBA_CACHE`` (called by ``import edge``). It wins over ``NUMBA_CACHE_DIR``."""
    value = os.environ.get(ENV)
    if value:
        os.environ[NUMBA_ENV] = str(Path(value).expanduser().resolve())
