"""firmware_bridge: how camera frames and contact-sensor samples reach emofuse.

Bottom layer of the package: it imports no other emofuse package and never imports torch.
Submodules are imported on demand so that ``import firmware_bridge`` stays cheap.
"""
from firmware_bridge.errors import (  # noqa: F401
    BadInputError,
    CalibrationError,
    ConfigError,
    DeviceError,
    EmofuseError,
    MissingDependencyError,
    SourceEndedError,
)
