"""``emofuse`` subcommands that need torch (``train``, ``export``), found through the
``emofuse.commands`` entry-point group so that ``edge`` never imports ``export``."""
