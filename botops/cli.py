"""The ``botops`` command: Invoke's ``Program`` with the botops tasks (botops.tasks).

pip installs it with the project (``[project.scripts]``), as Invoke documents for a tool built on its
tasks; a checkout's .venv has it too. It is ``invoke`` with three differences, all through the
``Program`` methods Invoke documents for subclasses:

- the namespace is botops's, wherever the command is run (no tasks.py is looked for);
- every refusal of the parser (an unknown task or flag, a flag without its value) exits 2, like every
  other bad input, instead of 1, and says it in the task's words: a misspelt flag is named with the
  closest flag the task has ("deploy: --verison is not a flag of deploy; did you mean --version?");
- a short flag after a task is refused: botops tasks take long flags only. Invoke would otherwise
  read ``-l`` after a task as its own ``--list``.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterator

from invoke import Exit, Program
from invoke.exceptions import ParseError

from botops.runner import EXIT_USAGE

HELP_HINT = "'botops --list' lists the tasks; 'botops --help TASK' lists a task's flags."


def task_flags(collection, name: str) -> list[str]:
    return sorted(f"--{n}" for arg in collection[name].get_arguments() for n in arg.names if len(n) > 1)


def flags_after_tasks(collection, argv: list[str]) -> Iterator[tuple[str, str]]:
    """(task, token) for every flag token given after a task's name on the command line."""
    name = None
    for token in argv:
        if not token.startswith("-"):
            if token in collection.task_names:
                name = token
            continue
        if name is not None:
            yield name, token


def short_flag_refusal(collection, argv: list[str]) -> str | None:
    """The refusal of a short flag given to a task, or None."""
    for name, token in flags_after_tasks(collection, argv):
        if re.match(r"-[A-Za-z]", token):  # -l, -h; not a value such as --bots -2
            return (f"{name}: {token.split('=', 1)[0]} is not a flag of {name}: botops tasks take long flags only "
                    f"(the flags of {name}: {', '.join(task_flags(collection, name))})")
    return None


def parse_error_refusal(collection, argv: list[str], exc: Exception) -> str:
    """Invoke's refusal in the words of the command line: a flag the task does not have is named, with
    the closest flag it has ('deploy --verison=1.1.0' says "No idea what '1.1.0' is!" otherwise)."""
    for name, token in flags_after_tasks(collection, argv):
        flags = task_flags(collection, name)
        flag = token.split("=", 1)[0]
        if flag in flags:
            continue
        close = difflib.get_close_matches(flag, flags, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"the flags of {name}: {', '.join(flags)}"
        return f"{name}: {flag} is not a flag of {name}; {hint}"
    needs = re.match(r"Flag <Argument: ([\w-]+)", str(exc))
    if needs:  # "Flag <Argument: version *> needed value and was not given one!"
        flag = f"--{needs.group(1).replace('_', '-')}"
        task = next((name for name, token in flags_after_tasks(collection, argv) if token.split("=")[0] == flag), None)
        return f"{task + ': ' if task else ''}{flag} needs a value ({flag}=VALUE)"
    unknown = re.match(r"No idea what '(.+)' is!", str(exc))
    if unknown and not unknown.group(1).startswith("-"):
        close = difflib.get_close_matches(unknown.group(1), sorted(collection.task_names), n=1, cutoff=0.6)
        return f"{unknown.group(1)} is not a task" + (f"; did you mean {close[0]}?" if close else "")
    return str(exc)


class Botops(Program):
    """Invoke's Program, refusing what its parser refuses with exit 2 and the flag meant."""

    def parse_core(self, argv) -> None:
        try:
            super().parse_core(argv)
        except ParseError as exc:  # a core flag's refusal: 'botops --lsit'
            raise Exit(f"{exc}\n{HELP_HINT}", code=EXIT_USAGE) from None

    def parse_tasks(self) -> None:
        refusal = short_flag_refusal(self.collection, self.core.unparsed)
        if refusal:
            raise Exit(f"{refusal}\n{HELP_HINT}", code=EXIT_USAGE)
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise Exit(f"{parse_error_refusal(self.collection, self.core.unparsed, exc)}\n{HELP_HINT}",
                       code=EXIT_USAGE) from None

    def parse_cleanup(self) -> None:
        try:
            super().parse_cleanup()
        except ParseError as exc:  # 'botops --help TASK' of a task there is not
            raise Exit(f"{parse_error_refusal(self.collection, [], exc)}\n{HELP_HINT}", code=EXIT_USAGE) from None


def _program() -> Botops:
    from importlib.metadata import PackageNotFoundError, version

    from botops.tasks import ns

    try:
        release = version("botops")
    except PackageNotFoundError:  # run from a checkout that pip has not installed
        release = "unknown"
    return Botops(namespace=ns, name="botops", binary="botops", version=release)


def main(argv: list[str] | None = None) -> None:
    _program().run(argv)


if __name__ == "__main__":
    main(sys.argv)
