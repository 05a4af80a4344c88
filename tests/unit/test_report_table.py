"""The per-bot table: aligned, and no message cut so that its action is lost."""

from botops.report import MAX_CELL, table


def test_a_long_message_is_cut_in_its_cell_and_printed_whole_below():
    hint = ("preflight refused bot bot04: ready=False (the bot is stopped); start it again with "
            "botops restart --limit=bot04 --mode=recover")
    assert len(hint) > MAX_CELL
    out = table([{"name": "bot04", "result": "refused", "message": hint},
                 {"name": "bot05", "result": "ok", "message": None}],
                [("name", "bot"), ("result", "result"), ("message", "message")])
    lines = out.splitlines()
    assert lines[0].split() == ["bot", "result", "message"]
    assert lines[2].startswith("bot04  refused") and lines[2].endswith("...")
    assert lines[3].split() == ["bot05", "ok", "-"]
    assert lines[-2:] == ["In full:", f"  bot04 (message): {hint}"]


def test_short_values_leave_no_full_text_section():
    out = table([{"name": "bot01", "result": "ok"}], [("name", "bot"), ("result", "result")])
    assert "In full" not in out and out.splitlines()[-1].split() == ["bot01", "ok"]
