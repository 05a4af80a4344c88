"""Every module documents itself: ansible-doc renders it, its options are its argument spec, the options
every bot module shares come from one doc fragment, descriptions stay short, EXAMPLES and RETURN are
valid YAML."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import bot_argument_spec

REPO = Path(__file__).resolve().parents[2]
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py"))
COLLECTION = "botops.fleet"

# The options bot_argument_spec() gives every bot module are documented once, with their sub-options,
# in this fragment (plugins/doc_fragments/ of the collection).
FRAGMENT = "botops.fleet.botops_bot"
SHARED = tuple(bot_argument_spec())  # profile, bot, secrets

# How long documentation may be. A module's `description` says what it does in a few bullets: how an
# operation goes step by step, and why, is a page of docs/operations/ that its notes link to.
DESCRIPTION_MAX_LINES = 12  # lines of the `description:` block in the DOCUMENTATION source
DESCRIPTION_MAX_ITEMS = 6
OPTION_MAX_CHARS = 320  # one or two sentences per option (all its description items together)


def doc_strings(name):
    tree = ast.parse((REPO / "plugins" / "modules" / f"{name}.py").read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("DOCUMENTATION", "EXAMPLES", "RETURN"):
                found[node.targets[0].id] = node.value.value
    return found


def own_documentation(name):
    """The module's DOCUMENTATION as written, before any fragment is merged in."""
    return yaml.safe_load(doc_strings(name)["DOCUMENTATION"])


class _SpecCaptured(Exception):
    pass


def argument_spec_of(name):
    """The argument spec main() gives AnsibleModule (main() goes no further)."""
    module = importlib.import_module(f"ansible_collections.botops.fleet.plugins.modules.{name}")

    def capture(*args, **kwargs):
        raise _SpecCaptured(kwargs.get("argument_spec", args[0] if args else None))

    with mock.patch.object(module, "AnsibleModule", capture), pytest.raises(_SpecCaptured) as info:
        module.main()
    return info.value.args[0]


def takes_shared_options(spec):
    shared = bot_argument_spec()
    return all(spec.get(key) == shared[key] for key in SHARED)


@pytest.fixture(scope="module")
def rendered():
    """Every module's documentation as ansible-doc renders it, fragments merged (ansible.cfg in the cwd)."""
    ansible_doc = Path(sys.executable).with_name("ansible-doc")
    proc = subprocess.run([str(ansible_doc), "--json", *(f"{COLLECTION}.{m}" for m in MODULES)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return {name.rpartition(".")[2]: doc for name, doc in json.loads(proc.stdout).items()}


def test_ansible_doc_renders_every_module(rendered):
    for name in MODULES:
        assert rendered[name]["doc"]["short_description"], name
        assert "check_mode" in rendered[name]["doc"].get("attributes", {}), f"{name} declares no check_mode support"


def test_the_fragment_is_the_collections():
    assert (REPO / "plugins" / "doc_fragments" / f"{FRAGMENT.rpartition('.')[2]}.py").is_file()


def test_the_fleet_entries_say_what_the_shared_options_say():
    """The fragment's FLEET (bot_fleet_kill_switch's bots entries) repeats DOCUMENTATION's bot and secrets:
    a fragment is literal YAML, so the copy is checked here instead."""
    fragment = importlib.import_module("ansible_collections.botops.fleet.plugins.doc_fragments.botops_bot").ModuleDocFragment
    shared = yaml.safe_load(fragment.DOCUMENTATION)["options"]
    entries = yaml.safe_load(fragment.FLEET)["options"]["bots"]["suboptions"]
    differ = [key for key in ("bot", "secrets") if entries.get(key) != shared[key]]
    assert not differ, f"the FLEET entries' {differ} differ from DOCUMENTATION's: copy them word for word"


@pytest.mark.parametrize("name", MODULES)
def test_shared_options_come_from_the_fragment(name):
    """profile, bot and secrets are never documented by hand, at any depth: a module that takes them
    extends the fragment, and one that takes them nested (bot_fleet_kill_switch's bots) extends its FLEET."""
    doc = own_documentation(name)
    own = doc.get("options") or {}
    hand = sorted(set(own) & set(SHARED))
    assert not hand, f"{name} documents {hand} by hand: use extends_documentation_fragment: [{FRAGMENT}]"
    fragments = doc.get("extends_documentation_fragment") or []
    if takes_shared_options(argument_spec_of(name)):
        assert FRAGMENT in fragments, f"{name} takes bot_argument_spec() but does not extend the {FRAGMENT} fragment"
    else:
        assert FRAGMENT not in fragments, f"{name} extends {FRAGMENT} but does not take bot_argument_spec()"

    def nested(options, where):
        for key, option in (options or {}).items():
            if key in SHARED and "suboptions" in option:
                yield f"{where}{key}"
            yield from nested(option.get("suboptions"), f"{where}{key}.")

    copied = list(nested(own, ""))
    assert not copied, f"{name} copies the sub-options of {copied} by hand: they are the {FRAGMENT} fragment's"


def compare(spec, docs, where, problems):
    """What the documentation says of each option (type, required, default, choices, elements, sub-options)
    is what the argument spec does."""
    shared = bot_argument_spec()
    for key in sorted(set(spec) - set(docs)):
        problems.append(f"{where}{key}: in the argument spec, not documented")
    for key in sorted(set(docs) - set(spec)):
        problems.append(f"{where}{key}: documented, not in the argument spec")
    for key in sorted(set(spec) & set(docs)):
        s, d = spec[key], docs[key]
        expected = dict(type=s.get("type", "str"), required=s.get("required", False), default=s.get("default"),
                        choices=s.get("choices"), elements=s.get("elements"))
        found = dict(type=d.get("type", "str"), required=d.get("required", False), default=d.get("default"),
                     choices=d.get("choices"), elements=d.get("elements"))
        for field in expected:
            if expected[field] != found[field]:
                problems.append(f"{where}{key}: {field} is {expected[field]!r} in the spec, {found[field]!r} in the docs")
        if "options" in s:
            if "suboptions" in d:
                compare(s["options"], d["suboptions"], f"{where}{key}.", problems)
            elif not (key in SHARED and s["options"] == shared[key].get("options")):
                # only the fragment's own options may leave their sub-options to it
                problems.append(f"{where}{key}: its sub-options are not documented")


@pytest.mark.parametrize("name", MODULES)
def test_options_are_the_argument_spec(name, rendered):
    problems = []
    compare(argument_spec_of(name), rendered[name]["doc"].get("options") or {}, "", problems)
    assert not problems, f"{name}: the documentation and the argument spec differ:\n  " + "\n  ".join(problems)


def description_block(text):
    """The lines of the top-level `description:` of a DOCUMENTATION source."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("description:"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i][0].isspace()), len(lines))
    return lines[start + 1:end] if lines[start].strip() == "description:" else lines[start:end]


@pytest.mark.parametrize("name", MODULES)
def test_documentation_is_concise(name):
    text = doc_strings(name)["DOCUMENTATION"]
    block = description_block(text)
    assert len(block) <= DESCRIPTION_MAX_LINES, (
        f"{name}: description is {len(block)} lines (at most {DESCRIPTION_MAX_LINES}); move how the operation "
        "goes, and why, to docs/operations/ and link it from notes")
    items = own_documentation(name)["description"]
    items = items if isinstance(items, list) else [items]
    assert len(items) <= DESCRIPTION_MAX_ITEMS, f"{name}: description has {len(items)} items (at most {DESCRIPTION_MAX_ITEMS})"

    def long_options(options, where):
        for key, option in (options or {}).items():
            desc = option.get("description") or ""
            size = sum(map(len, desc)) if isinstance(desc, list) else len(desc)
            if size > OPTION_MAX_CHARS:
                yield f"{where}{key} ({size} characters)"
            yield from long_options(option.get("suboptions"), f"{where}{key}.")

    long = list(long_options(own_documentation(name).get("options"), ""))
    assert not long, f"{name}: option descriptions longer than {OPTION_MAX_CHARS} characters: {long}"


@pytest.mark.parametrize("name", MODULES)
def test_linked_pages_exist(name):
    for page in re.findall(r"C\((docs/[^)\s]+\.md)\)", doc_strings(name)["DOCUMENTATION"]):
        assert (REPO / page).is_file(), f"{name} links {page}, which does not exist"


@pytest.mark.parametrize("name", MODULES)
def test_examples_and_return_are_yaml(name):
    strings = doc_strings(name)
    assert set(strings) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}, name
    examples = yaml.safe_load(strings["EXAMPLES"])
    assert isinstance(examples, list) and examples, f"{name}: EXAMPLES holds no task"
    fqcn = f"{COLLECTION}.{name}"
    calls = [task for task in examples if fqcn in task]
    assert calls, f"{name}: EXAMPLES never calls the module by its FQCN {fqcn}"
    spec = argument_spec_of(name)
    for task in calls:
        unknown = sorted(set(task.get(fqcn) or {}) - set(spec))
        assert not unknown, f"{name}: EXAMPLES pass {unknown}, which the module does not take"
    assert isinstance(yaml.safe_load(strings["RETURN"]), dict), name
