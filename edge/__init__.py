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
