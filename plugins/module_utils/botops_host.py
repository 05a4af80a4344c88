# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Programs run and files read on the bot's host, as a profile's `command` and `file` say (a bot
driven by its own CLI or a message-bus client, a bot that writes its status to a file): BotHost, a
part of botops_bot.Bot, and run_program (no shell, a process group of its own, a timeout). Stdlib only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal as signal_mod
import subprocess
import time

from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import describe_check, describe_source, map_key, ok_codes

COMMAND_TIMEOUT = 10.0  # seconds a profile's program may run when its `timeout` does not say
PROGRAM_REAP = 2.0  # seconds a program killed at its timeout is given to close its output
FILE_LIMIT = 8 << 20  # bytes of a status file read at most: a status is small, a huge file is not one


def argv_text(value):
    """A placeholder's value as a program's argument: strings as they are, true / false / null and
    numbers as JSON writes them."""
    return value if isinstance(value, str) else map_key(value)


def substitute_text(text, variables):
    """Replace '{name}' placeholders in one argument (or a path): always text; a name without a
    value stays as written."""
    return re.sub(r"\{(\w+)\}", lambda m: argv_text(variables[m.group(1)]) if m.group(1) in variables
                  else m.group(0), text)


def last_line(text, limit=200):
    """The last line of a program's output that says something, cut short ('' when none)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[-1] if len(lines[-1]) <= limit else lines[-1][:limit - 3] + "..."


def _kill_group(proc):
    """SIGKILL to the program and everything it started in its process group."""
    try:
        os.killpg(proc.pid, signal_mod.SIGKILL)
    except OSError:
        with contextlib.suppress(OSError):
            proc.kill()


def end_group(proc, reap=PROGRAM_REAP):
    """A program past its time (started with start_new_session): SIGKILL to it and its process group,
    then reap it, waiting `reap` seconds for its output to close; something outside its group that
    holds its output open (a child that left the group) does not hold this up."""
    _kill_group(proc)
    try:
        proc.communicate(timeout=reap)
    except subprocess.TimeoutExpired:
        for stream in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                stream.close()
        proc.wait()


def run_program(argv, cwd, timeout, name=None):
    """Run a program without a shell, stdin closed (/dev/null), the environment inherited, in a
    process group of its own; returns (exit code, stdout, stderr).

    After `timeout` seconds the program and its process group are killed: a BotError naming the
    program (`name`: argv[0] as the profile writes it; never the other arguments, they may hold
    substituted values) and the timeout. A program that cannot be started is a BotError too."""
    name = name or argv[0]
    if not os.path.isdir(cwd):
        raise BotError(f"cannot run {name}: its working directory {cwd} does not exist")
    try:
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        where = f" ({argv[0]})" if argv[0] != name else ""
        raise BotError(f"cannot run {name}{where}: {exc.strerror or exc}") from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        end_group(proc)
        raise BotError(f"{name} did not finish within {timeout:g}s (killed)") from None
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def program_failed(name, code, err):
    """The message of a program that exited with a code the profile does not accept."""
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    tail = last_line(err)
    return f"{name} {how}" + (f": {tail}" if tail else " (nothing on stderr)")


class BotHost:
    """The programs and files of a Bot on its host. It reads what Bot.__init__ sets (root, name,
    bot_id, _memo), and uses Bot._recall for a read within Bot.memoized."""

    def placeholders(self, variables=None):
        """The values a program's arguments and a file's path may name: the operation's (`{mode}`,
        `{reason}`...) and the bot's own `{bot_root}`, `{bot_name}`, `{bot_id}`. Never a secret."""
        values = dict(variables or {})
        values.update(bot_root=self.root, bot_name=self.name, bot_id=self.bot_id)
        return values

    def command_argv(self, command, variables=None):
        """(argv, working directory) of a profile's program: placeholders replaced; argv[0] with a
        '/' in it and not absolute is under bot_root, without one it is looked up on PATH; cwd is
        relative to bot_root (default bot_root)."""
        values = self.placeholders(variables)
        argv = [substitute_text(str(item), values) for item in command["argv"]]
        if "/" in argv[0] and not os.path.isabs(argv[0]):
            argv[0] = os.path.join(self.root, argv[0])
        cwd = os.path.join(self.root, substitute_text(command["cwd"], values)) if command.get("cwd") else self.root
        return argv, cwd

    @staticmethod
    def command_timeout(command):
        """Seconds the program may run: its own timeout, else 10. Not the profile's http.timeout: that
        bounds one request to a bot already running (2 s in the shipped profiles), a program starts
        first (an interpreter, its imports, a message bus's connection)."""
        return float(command.get("timeout") or COMMAND_TIMEOUT)

    def command_result(self, command, variables=None, memoize=True):
        """Run a profile's program on the bot's host: (exit code, stdout, stderr). Within `memoized`
        a program a probe or check runs (`memoize`; never an action's) runs once, like a GET."""
        argv, cwd = self.command_argv(command, variables)
        key = ("command", tuple(argv), cwd) if memoize and self._memo is not None else None
        return self._recall(key, lambda: run_program(argv, cwd, self.command_timeout(command), name=command["argv"][0]))

    @staticmethod
    def command_output(command, out):
        """What a program printed, as its `output` says: JSON parsed, or the stripped text."""
        if command.get("output", "json") == "text":
            return out.strip()
        name = command["argv"][0]
        if not out.strip():
            raise BotError(f"{name} printed nothing (expected JSON on stdout)")
        try:
            return json.loads(out)
        except ValueError:
            raise BotError(f"{name} did not print JSON: {out.strip()[:80]!r}") from None

    def file_path(self, spec):
        """A profile's file on the bot's host: relative to bot_root (or absolute); {bot_root}, {bot_name}
        and {bot_id} replaced."""
        return os.path.join(self.root, substitute_text(spec["path"], self.placeholders()))

    def read_file(self, spec, content=True):
        """(modification time, text or None without `content`) of a profile's file on the bot's host;
        BotError naming the path when it is missing or cannot be read. Within `memoized` read once."""
        path = self.file_path(spec)
        key = ("file", path) if self._memo is not None else None
        # a file read without its content does not do for a read of it
        return self._recall(key, lambda: self._read_file(path, content),
                            usable=lambda answer: answer[1] is not None or not content)

    @staticmethod
    def _read_file(path, content):
        try:
            with open(path, "rb") as f:
                mtime = os.fstat(f.fileno()).st_mtime
                raw = f.read(FILE_LIMIT + 1) if content else None
        except FileNotFoundError:
            raise BotError(f"file {path} is missing") from None
        except OSError as exc:
            raise BotError(f"cannot read file {path}: {exc.strerror or exc}") from None
        if raw is not None and len(raw) > FILE_LIMIT:
            raise BotError(f"file {path} is larger than {FILE_LIMIT >> 20} MiB: not a status")
        return mtime, None if raw is None else raw.decode(errors="replace")

    def file_content(self, spec, text):
        """A file's content as its `format` says: JSON parsed, or the stripped text."""
        if spec.get("format", "json") == "text":
            return text.strip()
        try:
            return json.loads(text)
        except ValueError:
            raise BotError(f"file {self.file_path(spec)} does not hold JSON: {text.strip()[:80]!r}") from None

    def read_on_host(self, spec, variables=None):
        """(document, source) of a probe that runs a program or reads a file on the bot's host; a
        program that exits with a code its `ok_codes` do not list is a BotError naming it, the code
        and the last line of its stderr."""
        if "command" in spec:
            command = spec["command"]
            code, out, err = self.command_result(command, variables)
            if code not in ok_codes(command):
                raise BotError(program_failed(command["argv"][0], code, err))
            return self.command_output(command, out), describe_source(spec)
        mtime, text = self.read_file(spec["file"])
        return self.file_content(spec["file"], text), describe_source(spec)

    def _check_on_host(self, spec):
        """The first part of a check on the bot's host: (ok, observed, document or None). A program's
        exit code (`exit_code`, else one of its `ok_codes`); a file there and its age (`modified_within`)."""
        observed = {}
        try:
            if "command" in spec:
                command = spec["command"]
                code, out, err = self.command_result(command)
                observed["exit_code"] = code
                wanted = [spec["exit_code"]] if "exit_code" in spec else ok_codes(command)
                if code not in wanted:
                    if last_line(err):
                        observed["stderr"] = last_line(err)
                    return False, dict(observed, expected=f"exit code {' or '.join(map(str, wanted))}"), None
                return True, observed, self.command_output(command, out) if "json" in spec else None
            mtime, text = self.read_file(spec["file"], content="json" in spec)
            observed["file_age"] = round(time.time() - mtime, 3)
            if "modified_within" in spec and not observed["file_age"] < spec["modified_within"]:
                return False, dict(observed, expected=f"{describe_source(spec)} modified less than "
                                                      f"{spec['modified_within']:g}s ago"), None
            return True, observed, self.file_content(spec["file"], text) if "json" in spec else None
        except BotError as exc:
            return False, dict(observed, error=str(exc), expected=describe_check(spec)), None
