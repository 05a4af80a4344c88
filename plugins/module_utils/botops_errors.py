# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The errors of an operation on a bot: BotError, and CredentialsError for the credentials its API
needs. The bottom of the Bot's files (plugins/module_utils/botops_bot.py and its parts): every one of them
raises these, so they live below all of them. Stdlib only.
"""

from __future__ import annotations


class BotError(Exception):
    """An operation on a bot failed; the message names the step and the cause."""


class CredentialsError(BotError):
    """The bot's credentials are missing, or its login refused them."""
