"""``emofuse`` subcommands that belong to the bridge (``devices``, ``simulate``...).

Each module defines ``register(subparsers)``, adding its parser with ``func(args) -> int``, and
is listed under the ``emofuse.commands`` entry-point group in setup.py; ``edge.cli`` discovers
them there, so no layer above has to import the bridge's commands by name.
"""
