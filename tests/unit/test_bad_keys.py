"""Every profile key and every inventory variable given a wrong value is refused, naming the key's
path and what is expected, by the validation botops runs before anything changes.

The cases are generated from botops/profile_schema.yml and botops/inventory_schema.yml, so a new
key is covered as soon as it is in a schema: for every property, nested ones, map values and list
items included, a value of the wrong type, an unknown name for an enum, an unknown key where the
keys are fixed, an empty string where the schema needs a non-empty one, and a huge value (10,000
characters, or 10**12). `test_every_key_is_bounded` holds each string to a maximum length and each
number to a maximum, so that a huge value is always refused. Each `$defs` entry is tested at the
first place it is used.

Profiles go through botops.profiles.validate; inventory variables through botops.inventory.hosts
with check_vars (the check every fleet task makes), all cases in one inventory, one bot per case.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest
import yaml

from botops import inventory, profiles
from botops.inventory import InventoryError

HUGE_LENGTH = 10_000
MAP_KEY = "*"  # a key of a map whose values share one schema (http.ports, bot_ports)
PROFILE_FAMILY = "hyperliquid"  # the valid profile the wrong values are put into
INVENTORY_BASE = {"bot_family": "vanta", "bot_root": "/opt/trading-bot"}  # a valid bot's variables


def _schema(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


PROFILE_SCHEMA = _schema(profiles.SCHEMA_FILE)
INVENTORY_SCHEMA = _schema(inventory.SCHEMA_FILE)


def keys(schema: dict) -> list[tuple[tuple, dict]]:
    """(path, schema) of every property of the schema, nested ones too; a `$defs` entry once."""
    found, seen = [], set()

    def walk(node: dict, path: tuple):
        ref = node.get("$ref")
        if ref:
            if ref in seen:
                return
            seen.add(ref)
            node = schema["$defs"][ref.rsplit("/", 1)[-1]]
        if path:
            found.append((path, node))
        for name, sub in (node.get("properties") or {}).items():
            walk(sub, path + (name,))
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], path + (MAP_KEY,))
        if isinstance(node.get("items"), dict):
            walk(node["items"], path + (0,))

    walk(schema, ())
    return found


def _types(node: dict) -> list[str]:
    kind = node.get("type")
    return [kind] if isinstance(kind, str) else list(kind or [])


def _accepts(node: dict, value) -> bool:
    return jsonschema.Draft202012Validator(node).is_valid(value)


def _huge_string(node: dict) -> str:
    """10,000 characters that the key's pattern accepts where one can, so that only the length is wrong."""
    filler = "a" * HUGE_LENGTH
    for candidate in (filler, "/" + filler, "redis://" + filler, "A" + filler):
        if "pattern" not in node or re.search(node["pattern"], candidate):
            return candidate
    return filler


@dataclass(frozen=True)
class Case:
    schema: str  # profile | inventory
    path: tuple
    kind: str
    value: object
    expected: tuple[str, ...]  # what the key's message must say, beside its path
    description: str | None = None  # said instead of "expected ..." by a pattern with a description

    @property
    def id(self) -> str:
        return f"{self.schema}:{'.'.join(map(str, self.path))}:{self.kind}"


def cases_for(schema_name: str, schema: dict) -> list[Case]:
    cases = []
    for path, node in keys(schema):
        types, enum = _types(node), node.get("enum")

        def add(kind, value, *expected):
            cases.append(Case(schema_name, path, kind, value, expected, node.get("description")))

        if enum:
            add("unknown name", "no-such-name", "expected one of: " + ", ".join(map(str, enum)))
        if types:
            wrong = next(v for v in ("text", 12345, ["a"], {"a": 1}, True)
                         if not any(jsonschema.Draft202012Validator({"type": t}).is_valid(v) for t in types))
            add("wrong type", wrong, f"expected {node['type']}")
        if node.get("additionalProperties") is False:
            add("unknown key", {"no_such_key": 1}, "unknown key 'no_such_key'", "expected one of:")
        if "string" in types:
            if not _accepts(node, ""):
                add("empty", "", "expected")
            if "maxLength" in node:
                add("huge", _huge_string(node), f"expected at most {node['maxLength']} characters")
        if ("integer" in types or "number" in types) and "maximum" in node:
            add("huge", 10**12 if "integer" in types else 1e12, f"to {node['maximum']})")
    return cases


PROFILE_CASES = cases_for("profile", PROFILE_SCHEMA)
INVENTORY_CASES = cases_for("inventory", INVENTORY_SCHEMA)


def put(document: dict, path: tuple, value) -> dict:
    """The document with value at path, creating what is missing on the way (a map key: one it has)."""
    document = copy.deepcopy(document)
    node = document
    for step, following in zip(path, path[1:] + (None,)):
        if step == MAP_KEY:
            step = next(iter(node), "api") if isinstance(node, dict) else "api"
        if isinstance(step, int):
            if not node:
                node.append(None)
            if following is None:
                node[0] = value
            elif not isinstance(node[0], (dict, list)):
                node[0] = [] if isinstance(following, int) else {}
            node = node[0]
            continue
        if following is None:
            if isinstance(value, dict) and isinstance(node.get(step), dict):
                node[step] = {**node[step], **value}  # an unknown key beside the known ones
            else:
                node[step] = value
        else:
            if not isinstance(node.get(step), (dict, list)):
                node[step] = [] if isinstance(following, int) or following == 0 else {}
            node = node[step]
    return document


def key_path(path: tuple, node: dict) -> str:
    """The key's path as the messages write it (a map key resolved as `put` does)."""
    text = ""
    for step in path:
        if step == MAP_KEY:
            step = next(iter(node), "api") if isinstance(node, dict) else "api"
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
        node = node.get(step) if isinstance(node, dict) else (node[step] if isinstance(node, list) and node else None)
    return text


def assert_refused(case: Case, lines: list[str], prefix: str) -> None:
    """One of the lines is about the key (prefix) and says what is expected."""
    mine = [line for line in lines if line.startswith(prefix)]
    assert mine, f"{case.id}: {case.value!r:.80} was not refused at {prefix!r}; problems:\n" + "\n".join(lines)
    said = [line for line in mine
            if all(text in line for text in case.expected)
            or (case.kind == "empty" and case.description and case.description in line)]
    assert said, f"{case.id}: the message does not say {case.expected}:\n" + "\n".join(mine)
    assert all(len(line) < 500 for line in mine), f"{case.id}: a huge value is echoed whole:\n{mine[0][:600]}"


# ---------------------------------------------------------------------------- profiles
@pytest.fixture(scope="module")
def valid_profile() -> dict:
    return profiles.load(PROFILE_FAMILY)


@pytest.mark.parametrize("case", PROFILE_CASES, ids=[c.id for c in PROFILE_CASES])
def test_wrong_profile_key_is_named_with_what_is_expected(valid_profile, case):
    source = f"profiles/{PROFILE_FAMILY}.yml"
    data = put(valid_profile, case.path, case.value)
    with pytest.raises(profiles.ProfileError) as info:
        profiles.validate(data, source)
    lines = [line.strip() for line in str(info.value).splitlines()[1:]]
    assert_refused(case, lines, f"{source}: {key_path(case.path, valid_profile)}: ")


# ---------------------------------------------------------------------------- inventory variables
@pytest.fixture(scope="module")
def inventory_problems(tmp_path_factory) -> list[str]:
    """All cases as the bots of one inventory (bot case0001 holds the first case's wrong value...)."""
    bots = {f"case{i:04d}": put(INVENTORY_BASE, case.path, case.value) for i, case in enumerate(INVENTORY_CASES)}
    path = tmp_path_factory.mktemp("bad-keys") / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"vars": {"ansible_connection": "local"}, "hosts": bots}}))
    with pytest.raises(InventoryError) as info:
        inventory.hosts(str(path), check_vars=True)
    return [line.strip() for line in str(info.value).splitlines()[1:]]


@pytest.mark.parametrize("index, case", list(enumerate(INVENTORY_CASES)), ids=[c.id for c in INVENTORY_CASES])
def test_wrong_inventory_variable_is_named_with_bot_and_key(inventory_problems, index, case):
    assert_refused(case, inventory_problems, f"case{index:04d}: {key_path(case.path, INVENTORY_BASE)}: ")


def test_the_base_documents_are_valid(valid_profile, tmp_path):
    profiles.validate(copy.deepcopy(valid_profile), f"profiles/{PROFILE_FAMILY}.yml")
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"vars": {"ansible_connection": "local"}, "hosts": {"b1": INVENTORY_BASE}}}))
    assert inventory.hosts(str(path), check_vars=True)[1] == ["b1"]


# ---------------------------------------------------------------------------- the schemas themselves
@pytest.mark.parametrize("name, schema", [("profile", PROFILE_SCHEMA), ("inventory", INVENTORY_SCHEMA)])
def test_every_key_is_bounded(name, schema):
    """A string without maxLength or a number without maximum would take a huge value silently."""
    unbounded = []
    for path, node in keys(schema):
        types = _types(node)
        if "string" in types and "maxLength" not in node:
            unbounded.append(f"{'.'.join(map(str, path))} (string without maxLength)")
        if ("integer" in types or "number" in types) and "maximum" not in node:
            unbounded.append(f"{'.'.join(map(str, path))} (number without maximum)")
    assert not unbounded, f"{name} schema: " + ", ".join(unbounded)


@pytest.mark.parametrize("name, schema", [("profile", PROFILE_SCHEMA), ("inventory", INVENTORY_SCHEMA)])
def test_every_object_refuses_unknown_keys(name, schema):
    """A misspelt key (`bot_service: {manger: systemd}`) would otherwise be ignored without a word.
    The inventory's top level is open: a host has many variables besides botops'."""
    open_objects = [".".join(map(str, path)) for path, node in keys(schema)
                    if "properties" in node and node.get("additionalProperties") is not False]
    assert not open_objects, f"{name} schema: objects that take any key: {open_objects}"


def test_the_cases_cover_every_key():
    """Every key gets at least one wrong value (an untyped key, `equals: {}`, accepts anything)."""
    for name, schema, cases in (("profile", PROFILE_SCHEMA, PROFILE_CASES),
                                ("inventory", INVENTORY_SCHEMA, INVENTORY_CASES)):
        covered = {c.path for c in cases}
        missing = [".".join(map(str, p)) for p, node in keys(schema) if p not in covered and (_types(node) or
                                                                                            node.get("enum"))]
        assert not missing, f"{name} keys without a case: {missing}"
        assert len({c.id for c in cases}) == len(cases)
