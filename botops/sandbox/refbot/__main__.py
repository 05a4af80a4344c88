"""Entry point: ``python -m refbot --root <bot_root>`` (cwd ``<bot_root>/current``)."""

import signal
import sys

# Take stop signals synchronously from the very start (app.main waits for them with
# sigtimedwait): a SIGTERM that arrives while the bot is still importing or starting up is
# handled gracefully instead of killing the process half-way.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})

from .app import main  # noqa: E402 - after the signal mask on purpose

if __name__ == "__main__":
    sys.exit(main())
