"""Entry point: ``python -m refbot --root <bot_root>`` (cwd ``<bot_root>/current``)."""

import sys

from .app import main

if __name__ == "__main__":
    sys.exit(main())
