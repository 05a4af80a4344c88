"""refbot: the reference trading bot of the botops sandbox.

A small but real paper-trading bot that speaks one of the five bot families' APIs
(mojorust, papertrader, solana-cli, hyperliquid, vanta) and trades into its own
PostgreSQL database. See docs/reference-bot.md for the contract it implements.

Run it from an extracted release: ``python -m refbot --root <bot_root>`` with the
working directory ``<bot_root>/current``.
"""
