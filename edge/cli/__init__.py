"""The ``emofuse`` command line.

Subcommands are modules registered under the ``emofuse.commands`` entry-point group (see
setup.py). Each module defines ``register(subparsers)``, which adds its parser and sets
``func`` (taking the parsed args, returning an exit code). Discovery by entry points keeps the
layering one-way: ``edge`` never imports ``export`` or ``calibrate`` to offer their commands.

Errors: an :class:`EmofuseError` becomes one line on stderr and exit code 2; Ctrl-C exits 0
after the command's own cleanup; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from importlib import metadata
from pathlib import Path

from edge import numba_cache
from firmware_bridge.errors import EmofuseError, MissingDependencyError

log = logging.getLogger("emofuse")


def bundle_folder(spec) -> Path:
    """The bundle folder a command's BUNDLE argument names: the one resolver every command
    that takes a bundle uses, so that each accepts ``default``.

    Args:
        spec: ``"default"`` (the packaged bundle, :func:`edge.pipeline.default_bundle_dir`) or
            a folder path (str or Path; not checked here: loading the bundle checks it).

    Returns:
        The folder as a :class:`pathlib.Path`.

    Raises:
        ConfigError: ``default`` when the packaged bundle is not installed.
    """
    if isinstance(spec, str) and spec == "default":
        # Imported here, not at the top: edge.pipeline loads the runtime, and the parser that
        # this module builds must stay light.
        from edge.pipeline import default_bundle_dir

        return default_bundle_dir()
    return Path(spec)


def _command_modules() -> dict[str, str]:
    """Map subcommand name -> module path from the installed entry points."""
    found = {ep.name: ep.value for ep in metadata.entry_points(group="emofuse.commands")}
    if not found:  # running from a source tree that was never pip-installed
        found = {"hr": "edge.cli.hr"}
    return dict(sorted(found.items()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emofuse",
        description="Edge emotion recognition fusing the face with the body's physiology.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)"
    )
    parser.add_argument(
        "--numba-cache", metavar="DIR",
        help="folder of compiled Numba kernels (fill it with `emofuse warmup`); default: the "
        f"{numba_cache.ENV} environment variable, else Numba's own default",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_path in _command_modules().items():
        try:
            module = importlib.import_module(module_path)
        except ImportError as exc:
            # A command whose optional dependency is missing still shows in --help and says,
            # when run, what to install; the other commands keep working.
            _register_unavailable(sub, name, module_path, exc)
            continue
        module.register(sub)
    return parser


def _register_unavailable(sub, name: str, module_path: str, exc: ImportError) -> None:
    missing = getattr(exc, "name", None) or str(exc)
    p = sub.add_parser(name, help=f"(unavailable: needs {missing})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def run(_args) -> int:
        raise MissingDependencyError(
            f"'{name}' needs {missing!r}, which is not installed ({module_path}: {exc}); "
            "install the extra that provides it, e.g. pip install 'emofuse[export]'"
        )

    p.set_defaults(func=run)


def _early_value(argv: list[str], flag: str) -> str | None:
    """The value of a top-level ``flag`` (``--flag V`` or ``--flag=V``) before the command name."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if not arg.startswith("-"):
            return None  # the command name: later flags are the command's
    return None


def main(argv: list[str] | None = None) -> int:
    # OpenCV's native loggers print warnings to stderr (e.g. when a file is not a video);
    # our own one-line error says it better. Must be set before cv2 is first imported.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    cache = _early_value(argv, "--numba-cache")
    if cache:
        # Before the parser loads the commands (and with them the Numba kernels).
        try:
            numba_cache.use_numba_cache(cache)
        except EmofuseError as exc:
            print(f"emofuse: error: {exc}", file=sys.stderr)
            return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except EmofuseError as exc:
        print(f"emofuse {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emofuse {args.command}: interrupted", file=sys.stderr)
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
