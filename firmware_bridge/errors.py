"""The package-wide exceptions of emofuse.

They live in ``firmware_bridge`` because it is the bottom layer: every other package may
import it, and it imports none of them. A CLI turns any :class:`EmofuseError` into one line
and a non-zero exit; any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib
from types import ModuleType


class EmofuseError(Exception):
    """Base of every error emofuse raises on purpose."""


class ConfigError(EmofuseError, ValueError):
    """A setting, flag, manifest field or argument is invalid."""


class MissingDependencyError(EmofuseError, ImportError):
    """An optional library is needed for the feature asked for and is not installed."""


class BadInputError(EmofuseError, ValueError):
    """Input data is missing, unreadable, corrupt or of the wrong shape or kind."""


class SourceEndedError(EmofuseError):
    """A camera, sensor or recording stopped delivering and cannot be resumed."""


class DeviceError(EmofuseError, OSError):
    """A device could not be opened or stopped answering (unplugged, busy, no permission)."""


class CalibrationError(EmofuseError):
    """INT8 calibration or its accuracy gate failed."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional library or raise one clear error naming the extra to install.

    Args:
        module: dotted module name, e.g. ``"serial"``.
        extra: the emofuse extra that installs it, e.g. ``"sensors"``.
        purpose: what the caller wanted it for, for the message.

    Raises:
        MissingDependencyError: when the import fails.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the '{module}' module: pip install 'emofuse[{extra}]' ({exc})"
        ) from exc
