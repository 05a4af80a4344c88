"""Plain-text tables for the end of every task: one row per bot."""

from __future__ import annotations


MAX_CELL = 100  # longer values are cut here and printed whole below the table


def _cell(value) -> str:
    text = _text(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "..."


def one_line(value) -> str:
    """A message as one sentence: text as it is, a list or mapping as its parts (never a Python repr)."""
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, dict):
        return "; ".join(f"{k}: {one_line(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "; ".join(one_line(v) for v in value)
    return "" if value is None else str(value)


def _text(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list, tuple)):
        return one_line(value)
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def shown(value, limit: int = 60) -> str:
    """A value as a message quotes it: its repr, cut short when huge (with its length), so that a
    10,000-character flag value still gets a one-line error."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return text[: limit - 4] + "..." + text[-1] + size


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """Render rows as an aligned table; columns are (key, heading) pairs. A value too long for its
    cell is cut there and printed whole below the table, under the row's first column (the bot), so
    that no message loses the action it names."""
    cells = [[heading for _, heading in columns]]
    cells += [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    whole = [f"{_text(row.get(columns[0][0]))} ({heading}): {_text(row.get(key))}"
             for row in rows for key, heading in columns if len(_text(row.get(key))) > MAX_CELL]
    if whole:
        lines += ["", "In full:"] + [f"  {line}" for line in whole]
    return "\n".join(lines)
