"""edge: what runs on the device (signal kernels, face tracking, engines, pipeline, CLI).

Builds on ``firmware_bridge``; never imports torch. Heavy submodules are imported on demand.
"""
from firmware_bridge.errors import (  # noqa: F401
    BadInputError,
    ConfigError,
    EmofuseError,
    MissingDependencyError,
    SourceEndedError,
)
from edge.numba_cache import apply_environment as _apply_numba_cache

# Before any kernel module imports numba: EMOFUSE_NUMBA_CACHE -> NUMBA_CACHE_DIR (edge.numba_cache).
_apply_numba_cache()


def __getattr__(name: str):
    # Lazy (PEP 562): ``edge.Pipeline`` without paying for the pipeline's imports on
    # ``import edge``.
    if name == "Pipeline":
        from edge.pipeline import Pipeline

        return Pipeline
    if name == "Result":
        from edge.results import Result

        return Result
    raise AttributeError(f"module 'edge' has no attribute {name!r}")
