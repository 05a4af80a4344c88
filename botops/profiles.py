"""Bot profiles: each bot family described as data, validated when loaded.

A profile is `<family>.yml` in a directory of the profiles search path. It is checked against
`profile_schema.yml` (JSON Schema) and a few cross-field rules; every error names the file, the key
path and what was expected. Secrets never live in a profile: it names the inventory variables that
hold them.

The search path, first match wins (a family found earlier shadows one of the same name later):

1. `BOTOPS_PROFILES_DIR`, one directory (the older setting, kept: it no longer replaces the
   built-in profiles, it is searched in front of them);
2. `BOTOPS_PROFILES_PATH`, directories separated by `os.pathsep` (':' on POSIX), in order;
3. the built-in `profiles/` of this repository.

The lookup plugin `bot_profile`, the Invoke front end and the playbooks it runs (botops.runner
hands the resolved path on to ansible-runner) all search the same path.

A profile that passed is remembered (`CACHE_DIR`, one JSON file per profile file, valid for that
text of the file under this schema and this module): the lookup runs in each task's own worker process,
where loading and validating a profile anew - importing jsonschema, building the validator, parsing
the YAML - cost about 0.2 s of CPU per bot and task, most of a deploy's controller CPU per bot.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import map_key

from botops.layout import COLLECTION, HOME
from botops.report import shown

if TYPE_CHECKING:  # jsonschema is imported when a profile is validated, not with this module
    import jsonschema

BUILTIN_DIR = COLLECTION / "profiles"
SCHEMA_FILE = Path(__file__).with_name("profile_schema.yml")
CACHE_DIR = HOME / ".ansible" / "botops" / "profiles"  # validated profiles (see the module docstring)
CACHE_FORMAT = 1


class ProfileError(ValueError):
    """A profile is missing or invalid; the message says where and what was expected."""


def profiles_dir() -> Path:
    """The built-in profiles directory (the last one of the search path)."""
    return BUILTIN_DIR


def search_path(environ=None) -> list[Path]:
    """The profile directories, searched in this order: BOTOPS_PROFILES_DIR, then the entries of
    BOTOPS_PROFILES_PATH, then the built-in profiles/. Empty entries are ignored, a directory is
    listed once (its first place)."""
    environ = os.environ if environ is None else environ
    entries = [environ.get("BOTOPS_PROFILES_DIR") or ""]
    entries += (environ.get("BOTOPS_PROFILES_PATH") or "").split(os.pathsep)
    found: list[Path] = []
    seen: set[str] = set()
    for entry in [*entries, str(BUILTIN_DIR)]:
        if not entry.strip():
            continue
        path = Path(entry).expanduser()
        key = os.path.normpath(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            found.append(path)
    return found


def search_path_text(directories: list[Path] | None = None) -> str:
    """The search path as a person reads it: 'dir1, dir2, .../profiles'."""
    return ", ".join(str(d) for d in (directories or search_path()))


def _directories(directory) -> list[Path]:
    if directory is None:
        return search_path()
    if isinstance(directory, (str, os.PathLike)):
        return [Path(directory)]
    return [Path(d) for d in directory]


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    import jsonschema  # here, not at the top: a worker process that finds its profile remembered never needs it

    schema = yaml.safe_load(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def locate(directory=None) -> dict[str, Path]:
    """Each family of the search path (or of the directories given) and the file that defines it:
    the first directory holding `<family>.yml` wins. A directory that does not exist holds none."""
    found: dict[str, Path] = {}
    for path in _directories(directory):
        try:
            files = sorted(path.glob("*.yml"))
        except OSError:
            continue
        for file in files:
            if not file.stem.startswith(".") and file.stem not in found:
                found[file.stem] = file
    return found


def available(directory=None) -> list[str]:
    """The bot families of the search path (or of the directory, or list of directories, given)."""
    return sorted(locate(directory))


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = []
    for part in error.absolute_path:
        parts.append(f"[{part}]" if isinstance(part, int) else (f".{part}" if parts else str(part)))
    return "".join(parts) or "(top level)"


# what a key that another key needs gives it (dependentRequired)
NEEDED_FOR = {"json": "the path of the value it tests", "file": "the file whose age it tests",
              "command": "the program whose exit code it tests", "count": "where picks the items counted",
              "do": "the actions done for each item", "each": "the list whose items it acts on"}


def describe_error(error: jsonschema.ValidationError) -> str:
    """One error as a sentence: what is wrong and what would be right."""
    validator, expected = error.validator, error.validator_value
    if validator == "additionalProperties":
        allowed = sorted((error.schema.get("properties") or {}).keys())
        extra = sorted(set(error.instance) - set(allowed))
        hint = f" (expected one of: {', '.join(allowed)})" if allowed else ""
        return f"unknown key {', '.join(repr(e) for e in extra)}{hint}"
    if validator == "required":
        missing = [k for k in expected if k not in error.instance]
        return f"missing required key {', '.join(repr(k) for k in missing)}"
    value = shown(error.instance)
    if validator == "type":
        return f"expected {expected}, got {type(error.instance).__name__} {value}"
    if validator == "enum":
        return f"{value} is not valid (expected one of: {', '.join(map(str, expected))})"
    if validator == "maxLength":
        return f"{value} is too long (expected at most {expected} characters)"
    if validator in ("pattern", "not", "minLength") and error.schema.get("description"):
        return f"{value} is not {error.schema['description']}"
    if validator == "minLength":
        return f"{value} is too short (expected at least {expected} character{'s' if expected != 1 else ''})"
    if validator == "pattern":
        return f"{value} does not match {expected!r} (expected a string matching it)"
    if validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        low = (f"more than {error.schema['exclusiveMinimum']}" if "exclusiveMinimum" in error.schema
               else error.schema.get("minimum", "..."))
        return f"{value} is out of range (expected {low} to {error.schema.get('maximum', '...')})"
    if validator == "dependentRequired":
        needs = []
        for key, deps in expected.items():
            missing = [d for d in deps if d not in error.instance]
            if key in error.instance and missing:
                why = NEEDED_FOR.get(missing[0], "what it tests")
                needs.append(f"'{key}' needs {', '.join(repr(d) for d in missing)} ({why})")
        return "; ".join(needs)
    if validator in ("oneOf", "anyOf"):
        keys = [sorted(s.get("required", [])) for s in expected]
        choices = [" + ".join(k) for k in keys if k]
        if choices:
            return f"expected exactly one of: {', '.join(choices)}"
    return error.message


def validate(data: object, source: str) -> dict:
    """Validate a loaded profile; raise ProfileError naming every problem found."""
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    problems = [f"{source}: {_key_path(e)}: {describe_error(e)}" for e in errors]
    if not problems:
        problems = _cross_checks(data, source)
    if problems:
        raise ProfileError("invalid profile\n  " + "\n  ".join(problems))
    return data


def _requests(node, path=""):
    """Yield (key path, request) for every HTTP request in the profile."""
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else key
            if key in ("http", "request") and isinstance(value, dict) and "path" in value:
                yield sub, value
            else:
                yield from _requests(value, sub)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _requests(value, f"{path}[{i}]")


def _walk(node, path=""):
    """Yield (key path, mapping) for every mapping in the profile."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


ACTION_KINDS = ("http", "redis_merge", "config_file", "service", "signal", "command", "each")


def _map_problems(data: dict, source: str) -> list[str]:
    """Value maps: no key twice (YAML true and "true" are one key), an action's map names placeholders
    the action uses."""
    problems = []
    for path, node in _walk(data):
        if not isinstance(node.get("map"), dict):
            continue
        if not any(kind in node for kind in ACTION_KINDS + ("redis", "file")):
            continue  # a "map" key in a request body, not a value map
        # a probe's map is value -> value; an action's is placeholder -> (value -> value)
        is_action = all(isinstance(v, dict) for v in node["map"].values())
        tables = node["map"].items() if is_action else [(None, node["map"])]
        for name, table in tables:
            where = f"{path}.map" + (f".{name}" if name is not None else "")
            keys = [map_key(k) for k in table]
            twice = sorted({k for k in keys if keys.count(k) > 1})
            if twice:
                problems.append(f"{source}: {where}: {', '.join(twice)} listed twice (true and \"true\" are one key)")
            if name is not None:
                used = json.dumps({k: v for k, v in node.items() if k != "map"})
                if "{" + name + "}" not in used:
                    problems.append(f"{source}: {where}: the action has no {{{name}}} placeholder to map")
    return problems


def _host_problems(data: dict, source: str) -> list[str]:
    """Programs and files on the bot's host: a program to run (argv[0] not empty); text output is read
    whole, so a probe or check of it has no JSON path."""
    problems = []
    for path, node in _walk(data):
        if re.search(r"\.body(\.|\[|$)", f".{path}") or ("command" not in node and "file" not in node):
            continue  # a request body holds data, not probes
        command, file = node.get("command"), node.get("file")
        if isinstance(command, dict) and isinstance(command.get("argv"), list) and command["argv"]:
            if not str(command["argv"][0]).strip():
                problems.append(f"{source}: {path}.command.argv[0]: the program to run is empty")
        text = ("command.output" if isinstance(command, dict) and command.get("output") == "text" else
                "file.format" if isinstance(file, dict) and file.get("format") == "text" else None)
        if text and node.get("json") not in (None, ""):
            problems.append(f"{source}: {path}.json: {node['json']!r} with {text} text: the text is read whole, "
                            "it has no JSON path (remove json, or set it to '')")
    return problems


PLACEHOLDER = re.compile(r"\{(\w+(?:\.\w+)*)\}")  # as module_utils.botops_values.PLACEHOLDER


def _item_problems(node, source: str, path: str = "", inside: bool = False) -> list[str]:
    """{item} and {item.x} are set only for the actions of an `each` (its do), nowhere else."""
    problems = []
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            problems += _item_problems(value, source, sub, inside or (key == "do" and "each" in node))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            problems += _item_problems(value, source, f"{path}[{i}]", inside)
    elif isinstance(node, str) and not inside:
        for name in PLACEHOLDER.findall(node):
            if name.split(".")[0] == "item":
                problems.append(f"{source}: {path}: {{{name}}} is set only in the actions of an each (its do)")
    return problems


def _where_problems(data: dict, source: str) -> list[str]:
    """A probe's `where` picks the items it counts: it needs count: true."""
    problems = []
    for path, node in _walk(data):
        if "where" in node and any(k in node for k in ("http", "redis", "command", "file")) and "count" in node and node["count"] is not True:
            problems.append(f"{source}: {path}.where: counts the items that match, and count is false "
                            "(set count: true, or remove where)")
    return problems


def _login_problems(data: dict, source: str) -> list[str]:
    """What the login sends is the credentials: basic ones travel in a header, not in body fields."""
    login = data["auth"].get("login") or {}
    problems = []
    if login.get("credentials") == "basic" and "fields" in login:
        problems.append(f"{source}: auth.login.fields: basic credentials travel in the Authorization header, "
                        "not in body fields (remove fields, or use credentials json or form)")
    if "body" in login.get("request", {}):
        problems.append(f"{source}: auth.login.request.body: the login's body is the credentials "
                        "(auth.login.credentials, auth.login.fields): remove body")
    return problems


def _rung_problems(data: dict, source: str) -> list[str]:
    """A rung that only thaws the bot (SIGCONT) leaves it trading: it cannot end an engage walk."""
    problems = []
    ladders = [("kill_switch.escalation", data["kill_switch"].get("escalation") or [])]
    for level, conf in data["kill_switch"]["levels"].items():
        ladders.append((f"kill_switch.levels.{level}.engage", conf.get("engage") or []))
    for path, rungs in ladders:
        for i, rung in enumerate(rungs):
            if rung.get("ends_walk", True) and all(a.get("signal") == "CONT" for a in rung["do"]):
                problems.append(f"{source}: {path}[{i}]: rung {rung['name']!r} only sends SIGCONT, which thaws the bot "
                                "and stops nothing: it cannot end the walk (set ends_walk: false and put it before "
                                "the rung that stops the bot)")
    return problems


def _cross_checks(data: dict, source: str) -> list[str]:
    problems = []
    stem = Path(source).stem
    if source.endswith(".yml") and data["family"] != stem:
        problems.append(f"{source}: family: {data['family']!r} does not match the file name (expected {stem!r})")
    ports = data["http"]["ports"]
    default_port = "api" if "api" in ports else next(iter(ports))
    for key_path, request in _requests(data):
        port = request.get("port", default_port)
        if port not in ports:
            problems.append(
                f"{source}: {key_path}.port: unknown port name {port!r} (expected one of: {', '.join(ports)})"
            )
    auth = data["auth"]
    if auth.get("check") and auth["type"] == "none":
        problems.append(f"{source}: auth.check: needs credentials to check (auth.type is none)")
    if data.get("identity", {}).get("count"):
        problems.append(f"{source}: identity.count: an id is one value, not a count (remove count)")
    if "map" in data.get("identity", {}):
        problems.append(f"{source}: identity.map: the id is compared as the bot reports it (remove map)")
    problems += _map_problems(data, source)
    problems += _host_problems(data, source)
    problems += _rung_problems(data, source)
    problems += _item_problems(data, source)
    problems += _where_problems(data, source)
    problems += _login_problems(data, source)
    migrations = data["database"].get("migrations", {})
    if migrations.get("tool") == "alembic" and not migrations.get("config"):
        problems.append(f"{source}: database.migrations.config: required when tool is alembic (path of alembic.ini)")
    if migrations.get("tool") == "alembic" and data["database"]["engine"] != "postgresql":
        problems.append(f"{source}: database.migrations.tool: alembic needs engine postgresql")
    return problems


def _cache_file(path: Path) -> Path:
    return CACHE_DIR / f"{path.stem}-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]}.json"


@functools.lru_cache(maxsize=1)
def _rules() -> str:
    """The rules a profile is validated by: the schema and this module, as they are."""
    digest = hashlib.sha256()
    for one in (SCHEMA_FILE, Path(__file__)):
        digest.update(one.read_bytes())
    return digest.hexdigest()


def _stamp(text: str) -> list:
    """What a remembered profile is valid for: this text of the profile, under these rules."""
    return [CACHE_FORMAT, hashlib.sha256(text.encode()).hexdigest(), _rules()]


def _remembered(path: Path, text: str) -> dict | None:
    try:
        with open(_cache_file(path), encoding="utf-8") as f:
            kept = json.load(f)
        if isinstance(kept, dict) and kept.get("stamp") == _stamp(text) and isinstance(kept.get("profile"), dict):
            return kept["profile"]
    except (OSError, ValueError):
        pass
    return None


def _remember(path: Path, text: str, data: dict) -> None:
    """Keep a validated profile for the next process; a profile that JSON would change (a key that is
    not a string) is not kept, and a cache that cannot be written changes nothing."""
    try:
        if json.loads(json.dumps(data)) != data:
            return
        CACHE_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=CACHE_DIR, prefix=".profile-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"source": str(path), "stamp": _stamp(text), "profile": data}, f)
            os.replace(tmp, _cache_file(path))
        except BaseException:
            os.unlink(tmp)
            raise
    except (OSError, TypeError, ValueError):
        pass


def load_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc.strerror}") from None
    remembered = _remembered(path, text)
    if remembered is not None:
        return remembered
    data = _load_and_validate(path, text)
    _remember(path, text, data)
    return data


def _load_and_validate(path: Path, text: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from None
    return validate(data, str(path))


def find(family: str, directory=None) -> Path:
    """The file of this family's profile: the first of the search path (or of the directories given)."""
    directories = _directories(directory)
    if not isinstance(family, str) or not family or "/" in family or os.sep in family or family.startswith("."):
        raise ProfileError(f"invalid bot family {family!r} (expected one of: {', '.join(available(directories))})")
    for path in directories:
        candidate = path / f"{family}.yml"
        if candidate.is_file():
            return candidate
    raise ProfileError(
        f"no profile for bot family {family!r} in {search_path_text(directories)} "
        f"(expected one of: {', '.join(available(directories))})"
    )


def load(family: str, directory=None) -> dict:
    """Load and validate the profile of one bot family (the first found on the search path)."""
    return load_file(find(family, directory))


def artifact_name(profile: dict, override: str | None = None) -> str:
    """The base name of a family's release artifacts (`<name>-<version>.tar.gz`): the inventory's
    bot_release_artifact when set, else the profile's release.artifact, else the family name.
    roles/bot_release/defaults/main.yml resolves bot_release_artifact_name the same way."""
    if override:
        return override
    return (profile.get("release") or {}).get("artifact") or profile["family"]
