"""docs/profiles.md and the profile schema cannot drift apart.

What this test reads in docs/profiles.md (its Reference section says the same to its writers):

- The reference is the `## ` section whose heading contains "Reference", up to the next `## `.
  In it, every object of botops/profile_schema.yml has a `### ` heading whose first backticked word
  names it: `profile` for the top level, the dotted path from the top level for an object defined
  in place (`auth.login`; `database.ledger.holdings` for the items of a list), the name of a
  `$defs` entry for a shared definition (`request`, `check`, `value_map`...).
- Under such a heading, every key of that object is a top-level bullet starting with the key in
  backticks: "- `key` ..." (the bullet goes on over indented lines). Other text, and indented
  bullets, declare nothing.
- A key's examples are the inline code spans of its bullet that start with "key:" (`key: value`).
  Each must parse as YAML and validate against that key's schema. A key whose value is an object
  with a section of its own may go without one; every other key needs one.
- Every ```yaml block of the page parses. A block with every required top-level key is a whole
  profile and must validate (botops.profiles.validate: the schema and the cross-field rules). A
  block whose keys all start with `bot_` is inventory variables, checked against
  botops/inventory_schema.yml. Any other block is a profile fragment: its keys must be top-level
  profile keys, and it must validate put in place of those keys in the worked example's profile.
- The worked example is the `## ` section whose heading contains "Worked example": its yaml
  blocks, together, are the Freqtrade profile. It must validate and, once profiles/freqtrade.yml
  exists, be that file's data.
- Every link to an anchor of the page (`](#...)`) names one of its headings.

Each test reports everything that drifted at once.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from botops import profiles

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "profiles.md"
SCHEMA = yaml.safe_load(profiles.SCHEMA_FILE.read_text())
INVENTORY_SCHEMA = yaml.safe_load((REPO / "botops" / "inventory_schema.yml").read_text())
FREQTRADE = REPO / "profiles" / "freqtrade.yml"
ROOT = "profile"
# inventory variables that hold secrets: not in the inventory schema (they may be vaulted)
SECRETS = {"bot_api_token", "bot_api_username", "bot_api_password", "bot_database_password"}

FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
HEADING = re.compile(r"^(#{2,6})\s+(.*?)\s*$")
KEY_BULLET = re.compile(r"^- `([^`]+)`")
CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


# ------------------------------------------------------------------------------------ the schema
def schema_objects(schema: dict) -> tuple[dict[str, dict[str, dict]], list[str]]:
    """Every object of the schema by its reference name, with its keys and each key's schema;
    and the names given twice (an object in place named like a $defs entry)."""
    objects: dict[str, dict[str, dict]] = {}
    origin: dict[str, str] = {}
    clashes: list[str] = []

    def visit(node, name: str, where: str, same: bool = False) -> None:
        # same: a subschema of the object `name` (allOf, if...), not an object of its own
        if not isinstance(node, dict) or "$ref" in node:
            return  # a reference: documented where it is defined
        if "properties" in node:
            if not same and origin.setdefault(name, where) != where:
                clashes.append(f"{name!r} names both {origin[name]} and {where}")
            keys = objects.setdefault(name, {})
            for key, sub in node["properties"].items():
                keys.setdefault(key, sub)
                child = key if name == ROOT else f"{name}.{key}"
                visit(sub, child, f"{where}.properties.{key}")
        for word in ("allOf", "oneOf", "anyOf"):
            for i, sub in enumerate(node.get(word) or []):
                visit(sub, name, f"{where}.{word}[{i}]", same=True)
        for word in ("if", "then", "else", "not"):
            visit(node.get(word), name, f"{where}.{word}", same=True)
        for word, sub in (node.get("dependentSchemas") or {}).items():
            visit(sub, name, f"{where}.dependentSchemas.{word}", same=True)
        # the items of a list are named like the list
        for i, sub in enumerate(node.get("prefixItems") or []):
            visit(sub, name, f"{where}.prefixItems[{i}]")
        for word in ("items", "contains"):
            visit(node.get(word), name, f"{where}.{word}")
        for sub in [node.get("additionalProperties"), *(node.get("patternProperties") or {}).values()]:
            visit(sub, f"{name}.*", f"{where}.additionalProperties")

    visit(schema, ROOT, "(top level)")
    for name, sub in schema.get("$defs", {}).items():
        if name in objects and origin.get(name) != f"$defs.{name}":
            clashes.append(f"{name!r} names both {origin[name]} and $defs.{name}")
        objects.setdefault(name, {})  # every shared definition has its section, with keys or not
        origin.setdefault(name, f"$defs.{name}")
        visit(sub, name, f"$defs.{name}")
    return objects, clashes


OBJECTS, CLASHES = schema_objects(SCHEMA)


def node_ref_parts(ref: str) -> list[str]:
    assert ref.startswith("#/"), f"only local references are read: {ref}"
    return ref[2:].split("/")


def deref(node: dict) -> dict:
    """The schema a key's value must pass, its references followed."""
    seen = 0
    while isinstance(node, dict) and "$ref" in node and seen < 20:
        target = SCHEMA
        for part in node_ref_parts(node["$ref"]):
            target = target[part]
        node, seen = target, seen + 1
    return node


def has_own_section(key_schema: dict) -> bool:
    """The key's value is an object documented in a section of its own."""
    return "properties" in deref(key_schema)


def key_validator(key_schema: dict) -> jsonschema.protocols.Validator:
    """A validator of one key's value: its schema, with the schema's $defs to resolve references."""
    cls = jsonschema.validators.validator_for(SCHEMA)
    return cls({**key_schema, "$defs": SCHEMA.get("$defs", {})})


# ------------------------------------------------------------------------------------ the page
TEXT = DOC.read_text()
LINES = TEXT.splitlines()


def sections(level: int = 2) -> dict[str, tuple[int, int]]:
    """{heading text: (first line, end line)} of the page's sections of this level (0-based,
    outside code blocks)."""
    found, current, fenced = {}, None, False
    for number, line in enumerate(LINES):
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = HEADING.match(line)
        if fenced or not match or len(match.group(1)) > level:
            continue
        if current is not None:
            found[current[0]] = (current[1], number)
        current = (match.group(2), number) if len(match.group(1)) == level else None
    if current is not None:
        found[current[0]] = (current[1], len(LINES))
    return found


def section(word: str) -> tuple[int, int]:
    matches = [span for title, span in sections().items() if word.lower() in title.lower()]
    assert len(matches) == 1, f"docs/profiles.md needs exactly one '## ' section with {word!r} in its heading"
    return matches[0]


def yaml_blocks(start: int = 0, end: int | None = None) -> list[tuple[int, str]]:
    """(line number, text) of every ```yaml block between these lines."""
    blocks, block, indent, lang = [], None, "", None
    for number, line in enumerate(LINES[:end] if end is not None else LINES):
        match = FENCE.match(line)
        if block is None and match:
            block, indent, lang, first = [], match.group(1), match.group(2), number + 1
            continue
        if block is not None and match and match.group(2) == "":
            if lang == "yaml" and first > start:
                blocks.append((first + 1, "\n".join(block)))
            block = None
            continue
        if block is not None:
            block.append(line[len(indent):] if line.startswith(indent) else line)
    assert block is None, "docs/profiles.md: a code block is not closed"
    return blocks


def reference() -> dict[str | None, dict[str, list[str]]]:
    """{object name: {key: [its bullet's text]}} as the Reference section documents them; the
    headings that name no object are under None."""
    start, end = section("Reference")
    documented: dict[str | None, dict[str, list[str]]] = {None: {}}
    current, bullet, fenced = None, None, False
    for line in LINES[start + 1:end]:
        if FENCE.match(line):
            fenced = not fenced
        if fenced:
            continue
        heading = HEADING.match(line)
        if heading:
            names = CODE_SPAN.findall(heading.group(2))
            current = names[0] if names else None
            documented.setdefault(current, {})
            bullet = None
            continue
        match = KEY_BULLET.match(line)
        if match:
            bullet = documented[current].setdefault(match.group(1), [])
            bullet.append(line)
        elif bullet is not None and line.startswith(" ") and line.strip():
            bullet.append(line)
        else:
            bullet = None
    return documented


REFERENCE = reference()


def report(title: str, problems: list[str]) -> str:
    return f"docs/profiles.md and botops/profile_schema.yml drifted: {title}:\n  " + "\n  ".join(problems)


# ------------------------------------------------------------------------------------ the reference
def test_the_schema_walk_finds_the_schema_objects():
    assert not CLASHES, report("a section name stands for two objects of the schema", CLASHES)
    for name in (ROOT, "http", "auth.login", "database.ledger.holdings", "request", "probe", "check", "action",
                 "rung", "level", "value_map"):
        assert name in OBJECTS, f"the schema walk of this test misses {name!r}: fix schema_objects()"
    assert "flatten" in OBJECTS["kill_switch.levels"]


def test_reference_documents_every_key_of_the_schema():
    problems = []
    for name, keys in sorted(OBJECTS.items()):
        if name not in REFERENCE:
            problems.append(f"no section '### `{name}`' for its keys {', '.join(sorted(keys)) or '(none)'}")
            continue
        missing = sorted(set(keys) - set(REFERENCE[name]))
        if missing:
            problems.append(f"section `{name}` lacks the key(s) {', '.join(missing)}")
    assert not problems, report("keys of the schema that the Reference does not document", problems)


def test_reference_documents_no_key_the_schema_lacks():
    problems = []
    for name, keys in sorted(REFERENCE.items(), key=lambda item: str(item[0])):
        if name is None:
            if keys:
                problems.append(f"key bullets {', '.join(sorted(keys))} under a heading that names no object")
            continue
        if name not in OBJECTS:
            problems.append(f"section `{name}` is no object of the schema (documents {', '.join(sorted(keys))})")
            continue
        unknown = sorted(set(keys) - set(OBJECTS[name]))
        if unknown:
            problems.append(f"section `{name}` documents {', '.join(unknown)}, which the schema does not have "
                            f"(it has {', '.join(sorted(OBJECTS[name])) or 'no keys'})")
    assert not problems, report("keys the Reference documents that the schema does not have", problems)


def test_every_key_has_an_example_that_the_schema_accepts():
    problems = []
    for name, keys in sorted(OBJECTS.items()):
        for key, key_schema in sorted(keys.items()):
            text = "\n".join(REFERENCE.get(name, {}).get(key) or [])
            if not text:
                continue  # reported by test_reference_documents_every_key_of_the_schema
            examples = [span for span in CODE_SPAN.findall(text) if span.startswith(f"{key}:")]
            if not examples and not has_own_section(key_schema):
                problems.append(f"`{name}` key `{key}` has no example (`{key}: ...` in its bullet)")
            for example in examples:
                try:
                    data = yaml.safe_load(example)
                except yaml.YAMLError as exc:
                    problems.append(f"`{name}` key `{key}`: example `{example}` is not YAML: {exc}")
                    continue
                if not isinstance(data, dict) or list(data) != [key]:
                    problems.append(f"`{name}` key `{key}`: example `{example}` is not one '{key}: value'")
                    continue
                errors = sorted(key_validator(key_schema).iter_errors(data[key]), key=lambda e: list(e.path))
                for error in errors:
                    problems.append(f"`{name}` key `{key}`: example `{example}` is refused by the schema: "
                                    f"{profiles.describe_error(error)}")
    assert not problems, report("examples of the Reference", problems)


# ------------------------------------------------------------------------------------ yaml blocks
def is_whole(data) -> bool:
    """A whole profile: every required top-level key is there."""
    return isinstance(data, dict) and all(key in data for key in SCHEMA.get("required", []))


def is_inventory(data) -> bool:
    return isinstance(data, dict) and bool(data) and all(str(key).startswith("bot_") for key in data)


def load_block(line: int, text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        pytest.fail(f"docs/profiles.md line {line}: the yaml block does not parse: {exc}")


def worked_example() -> tuple[dict, list[str]]:
    """The profile the worked example's blocks make together, and what is wrong with them."""
    start, end = section("Worked example")
    merged, problems = {}, []
    for line, text in yaml_blocks(start, end):
        data = load_block(line, text)
        if not isinstance(data, dict):
            problems.append(f"line {line}: not a mapping of profile keys")
            continue
        for key in sorted(set(data) & set(merged)):
            problems.append(f"line {line}: {key} is quoted twice")
        merged.update(data)
    return merged, problems


def test_every_yaml_block_parses():
    problems = []
    blocks = yaml_blocks()
    assert blocks, "docs/profiles.md has no yaml block"
    for line, text in blocks:
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as exc:
            problems.append(f"line {line}: {exc}")
    assert not problems, report("yaml blocks that do not parse", problems)


def test_whole_profiles_on_the_page_validate():
    problems, seen = [], 0
    for line, text in yaml_blocks():
        data = load_block(line, text)
        if is_whole(data):
            seen += 1
            try:
                profiles.validate(copy.deepcopy(data), f"docs/profiles.md line {line}")
            except profiles.ProfileError as exc:
                problems.append(str(exc))
    assert seen, "docs/profiles.md shows no whole profile (a yaml block with every required key)"
    assert not problems, report("whole profiles the schema refuses", problems)


def test_profile_fragments_validate_as_part_of_a_profile():
    base, trouble = worked_example()
    assert not trouble, report("the worked example", trouble)
    profiles.validate(copy.deepcopy(base), "docs/profiles.md worked example")
    top = set(SCHEMA["properties"])
    problems, seen = [], 0
    for line, text in yaml_blocks():
        data = load_block(line, text)
        if not isinstance(data, dict):
            problems.append(f"line {line}: a yaml block that is not a mapping (a profile fragment, a whole "
                            "profile or inventory variables)")
            continue
        if is_whole(data) or is_inventory(data):
            continue
        seen += 1
        unknown = sorted(str(key) for key in data if key not in top)
        if unknown:
            problems.append(f"line {line}: {', '.join(unknown)} is no top-level profile key "
                            f"(expected one of: {', '.join(sorted(top))})")
            continue
        try:
            profiles.validate(dict(copy.deepcopy(base), **copy.deepcopy(data)), f"docs/profiles.md line {line}")
        except profiles.ProfileError as exc:
            problems.append(str(exc))
    assert seen, "docs/profiles.md shows no profile fragment"
    assert not problems, report("profile fragments the schema refuses", problems)


def test_inventory_blocks_validate():
    schema = {k: v for k, v in INVENTORY_SCHEMA.items() if k != "required"}
    validator = jsonschema.validators.validator_for(schema)(schema)
    problems, seen = [], 0
    for line, text in yaml_blocks():
        data = load_block(line, text)
        if not is_inventory(data):
            continue
        seen += 1
        unknown = sorted(set(data) - set(INVENTORY_SCHEMA["properties"]) - SECRETS)
        if unknown:
            problems.append(f"line {line}: {', '.join(unknown)} is no inventory variable")
        for error in validator.iter_errors({k: v for k, v in data.items() if k not in SECRETS}):
            key = ".".join(map(str, error.absolute_path)) or "(variables)"
            problems.append(f"line {line}: {key}: {profiles.describe_error(error)}")
    assert seen, "docs/profiles.md shows no inventory variables"
    assert not problems, report("inventory variables botops/inventory_schema.yml refuses", problems)


# ------------------------------------------------------------------------------------ the worked example
def test_worked_example_is_a_valid_freqtrade_profile():
    data, problems = worked_example()
    assert not problems, report("the worked example", problems)
    assert data.get("family") == "freqtrade", "the worked example's blocks together are no freqtrade profile"
    profiles.validate(copy.deepcopy(data), "docs/profiles.md worked example")


def test_worked_example_is_the_shipped_freqtrade_profile():
    if not FREQTRADE.is_file():
        pytest.skip("profiles/freqtrade.yml is not shipped yet: nothing to compare the worked example with")
    shipped = yaml.safe_load(FREQTRADE.read_text())
    quoted, problems = worked_example()
    assert not problems, report("the worked example", problems)
    differ = sorted(key for key in set(shipped) | set(quoted) if shipped.get(key) != quoted.get(key))
    assert not differ, (f"docs/profiles.md's worked example and profiles/freqtrade.yml differ in: {', '.join(differ)} "
                        "(quote the profile as it ships)")


# ------------------------------------------------------------------------------------ links
def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = heading.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_links_to_the_page_name_its_headings():
    anchors, fenced = set(), False
    for line in LINES:
        if FENCE.match(line):
            fenced = not fenced
        match = HEADING.match(line) or (re.match(r"^(#)\s+(.*?)\s*$", line))
        if match and not fenced:
            base = slug(match.group(2))
            anchor, n = base, 0
            while anchor in anchors:
                n += 1
                anchor = f"{base}-{n}"
            anchors.add(anchor)
    broken = sorted({link for link in re.findall(r"\]\(#([^)]+)\)", TEXT) if link not in anchors})
    assert not broken, "docs/profiles.md links to anchors it has no heading for: " + ", ".join(broken)
