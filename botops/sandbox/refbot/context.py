"""Which bot the current thread works for.

One process may serve many bots (``python -m refbot --fleet-file``): every thread a bot starts
(its trading writer, its HTTP request threads) binds the bot's name, so that log lines go to
that bot's own ``bot.log``.
"""

from __future__ import annotations

import threading

_local = threading.local()


def bind(name: str | None) -> None:
    _local.bot = name


def current() -> str | None:
    return getattr(_local, "bot", None)
