# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redact secrets from text that leaves a bot: known secret values, and the shapes secrets take."""

from __future__ import annotations

import re

MASK = "********"

PATTERNS = [
    # scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+(@)", re.I), r"\1" + MASK + r"\2"),
    # Authorization: Bearer xxx / Basic xxx
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.I), r"\1 " + MASK),
    # password=..., token: ..., api_key "..." (JSON or key=value)
    (re.compile(r"""(["']?\b(?:password|passwd|pwd|secret|token|api[_-]?key|api[_-]?token|private[_-]?key)\b["']?"""
                r"""\s*[:=]\s*["']?)[^"'\s,}&]+""", re.I), r"\1" + MASK),
]


def redact(text, secrets=()):
    """Mask every given secret value and every secret-shaped assignment in text."""
    if not isinstance(text, str):
        return text
    for value in secrets:
        if value and len(str(value)) >= 4:
            text = text.replace(str(value), MASK)
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_tree(node, secrets=()):
    """redact() every string in a JSON-like tree."""
    if isinstance(node, str):
        return redact(node, secrets)
    if isinstance(node, dict):
        return {k: redact_tree(v, secrets) for k, v in node.items()}
    if isinstance(node, list):
        return [redact_tree(v, secrets) for v in node]
    return node
