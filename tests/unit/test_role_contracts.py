"""Roles are capabilities with contracts: roles/<role>/meta/argument_specs.yml declares each entry point
(`main`, and every tasks file imported with `tasks_from`) with the role's variables it reads, and
Ansible validates them before the entry point's first task.

What this test checks (each test lists everything wrong at once):

- every role has meta/argument_specs.yml; it parses, each entry point names a tasks file of the role
  (`main` is declared when tasks/main.yml exists) and has a short_description, each option a one-line
  description and a type;
- every `tasks_from` in the repository's YAML (playbooks, roles and their molecule scenarios, tests)
  names a declared entry point of its role, without an extension (with one Ansible validates nothing);
- every public variable of a role's defaults/main.yml (no `__` in its name) is declared by at least
  one entry point, and an entry point declares exactly the role's variables its tasks read (through
  import_tasks, and through defaults that name other defaults); an option is the role's own: in its
  defaults, or named `<role>_...`;
- a literal default is the spec's default and passes the spec's type; a templated one has no default
  in the spec (its description says what it defaults to); a required option has no default;
- no role's internal variable (`<role>__...`) is read outside roles/<role>/ (playbooks, roles, tests,
  botops, library, awx, docs, README.md);
- ansible-doc renders every role's entry points and their options.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

REPO = Path(__file__).resolve().parents[2]
ROLES_DIR = REPO / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "tasks").is_dir())

ROLE_ACTIONS = {f"{prefix}{verb}_role" for prefix in ("", "ansible.builtin.", "ansible.legacy.")
                for verb in ("import", "include")}
SKIPPED_DIRS = {".git", ".venv", "venv", "node_modules", "artifacts", ".tox", "__pycache__"}
# where a role's internal variables must not be read
INTERNAL_SCAN = ("playbooks", "roles", "tests", "botops", "library", "awx", "docs", "README.md")
TEXT_SUFFIXES = {".yml", ".yaml", ".py", ".md", ".j2", ".json", ".cfg", ".ini", ".txt", ".sh", ""}
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
IMPORTED_TASKS = re.compile(r"(?:import_tasks|include_tasks):\s*['\"]?([\w./-]+\.ya?ml)")


def load(path: Path):
    return yaml.safe_load(path.read_text())


def specs(role: str) -> dict:
    return (load(ROLES_DIR / role / "meta" / "argument_specs.yml") or {}).get("argument_specs") or {}


def defaults(role: str) -> dict:
    path = ROLES_DIR / role / "defaults" / "main.yml"
    return (load(path) or {}) if path.exists() else {}


def public_defaults(role: str) -> dict:
    return {name: value for name, value in defaults(role).items() if "__" not in name}


def templated(value) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def code(text: str) -> str:
    """YAML text without its comments (whole-line ones and trailing `  # ...`)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return "\n".join(re.sub(r"\s+#\s.*$", "", line) for line in lines)


def entry_files(role: str, entry: str) -> list[Path]:
    """The tasks file of an entry point and those it imports or includes, transitively."""
    tasks, seen, todo = ROLES_DIR / role / "tasks", [], [f"{entry}.yml"]
    while todo:
        path = tasks / todo.pop()
        if path in seen or not path.exists():
            continue
        seen.append(path)
        todo.extend(IMPORTED_TASKS.findall(code(path.read_text())))
    return seen


def read_by(role: str, entry: str) -> set[str]:
    """The role's variables an entry point reads: named in its tasks, or in the templated defaults
    of the variables named there (bot_release's internal artifact path reads bot_release_artifacts_dir)."""
    values = defaults(role)
    names = set()
    for path in entry_files(role, entry):
        names |= set(NAME.findall(code(path.read_text())))
    todo = list(names)
    while todo:
        value = values.get(todo.pop())
        if templated(value):
            for name in set(NAME.findall(value)) - names:
                names.add(name)
                todo.append(name)
    own = set(public_defaults(role)) | {n for spec in specs(role).values() for n in (spec.get("options") or {})}
    return names & own


def yaml_files():
    for path in sorted(REPO.rglob("*")):
        if path.suffix in (".yml", ".yaml") and path.is_file() \
                and not SKIPPED_DIRS.intersection(path.relative_to(REPO).parts):
            yield path


def role_imports(node, found: list, keys: list):
    """(role, tasks_from) of every import_role / include_role under node; keys: every tasks_from seen."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "tasks_from":
                keys.append(value)
            if key in ROLE_ACTIONS and isinstance(value, dict) and "tasks_from" in value:
                found.append((value.get("name"), value["tasks_from"]))
            role_imports(value, found, keys)
    elif isinstance(node, list):
        for item in node:
            role_imports(item, found, keys)


def tasks_from_uses() -> tuple[list[tuple[str, str, str]], list[str]]:
    """Every (file, role, tasks_from) in the repository's YAML, and the files whose tasks_from lines
    this could not account for (unparseable, or a tasks_from outside an import_role/include_role)."""
    uses, unaccounted = [], []
    for path in yaml_files():
        text = path.read_text(errors="replace")
        lines = len(re.findall(r"\btasks_from\s*:", code(text)))
        if not lines:
            continue
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError:
            docs = []
        found, keys = [], []
        role_imports(docs, found, keys)
        rel = str(path.relative_to(REPO))
        if len(found) != lines or len(keys) != lines:
            unaccounted.append(rel)
        uses.extend((rel, role, entry) for role, entry in found)
    return uses, unaccounted


def test_every_role_has_an_argument_spec_with_its_entry_points():
    problems = []
    for role in ROLES:
        path = ROLES_DIR / role / "meta" / "argument_specs.yml"
        if not path.exists():
            problems.append(f"{role}: no meta/argument_specs.yml")
            continue
        declared = specs(role)
        if (ROLES_DIR / role / "tasks" / "main.yml").exists() and "main" not in declared:
            problems.append(f"{role}: tasks/main.yml but no entry point main")
        for entry, spec in declared.items():
            if not (ROLES_DIR / role / "tasks" / f"{entry}.yml").exists():
                problems.append(f"{role}: entry point {entry} has no tasks/{entry}.yml")
            if not isinstance(spec, dict) or not str(spec.get("short_description") or "").strip():
                problems.append(f"{role} {entry}: no short_description")
                continue
            for name, option in (spec.get("options") or {}).items():
                description = option.get("description") if isinstance(option, dict) else None
                if not isinstance(description, str) or not description.strip() or "\n" in description.strip():
                    problems.append(f"{role} {entry} {name}: the description is not one line")
                if not isinstance(option, dict) or not option.get("type"):
                    problems.append(f"{role} {entry} {name}: no type")
    assert not problems, "\n  ".join(["argument specs:", *problems])


def test_every_tasks_from_names_a_declared_entry_point():
    uses, unaccounted = tasks_from_uses()
    assert not unaccounted, f"tasks_from this test cannot read (not in an import_role/include_role?): {unaccounted}"
    assert uses, "no tasks_from found: the search is broken"
    problems = []
    for path, role, entry in uses:
        if role not in ROLES:
            problems.append(f"{path}: tasks_from {entry} of {role!r}, which is not a role of roles/")
        elif not isinstance(entry, str) or not re.fullmatch(r"\w+", entry):
            problems.append(f"{path}: {role} tasks_from {entry!r} is not a bare tasks file name "
                            "(Ansible validates an entry point only by its name)")
        elif entry not in specs(role):
            problems.append(f"{path}: {role} tasks_from {entry} is not an entry point of "
                            f"roles/{role}/meta/argument_specs.yml")
    assert not problems, "\n  ".join(["tasks_from:", *problems])


def test_every_public_default_is_declared_and_each_entry_point_declares_what_it_reads():
    problems = []
    for role in ROLES:
        declared = specs(role)
        options = {entry: set((spec or {}).get("options") or {}) for entry, spec in declared.items()}
        everywhere = set().union(*options.values()) if options else set()
        for name in sorted(set(public_defaults(role)) - everywhere):
            problems.append(f"{role}: {name} (defaults/main.yml) is declared by no entry point")
        for entry, names in options.items():
            for name in sorted(names):
                if name not in public_defaults(role) and not (name.startswith(f"{role}_") and "__" not in name):
                    problems.append(f"{role} {entry}: {name} is not a variable of the role")
            read = read_by(role, entry)
            for name in sorted(read - names):
                problems.append(f"{role} {entry}: reads {name} but does not declare it")
            for name in sorted(names - read):
                problems.append(f"{role} {entry}: declares {name} but never reads it")
    assert not problems, "\n  ".join(["declared variables:", *problems])


def test_defaults_and_types_match_defaults_main():
    problems = []
    for role in ROLES:
        values = public_defaults(role)
        for entry, spec in specs(role).items():
            options = (spec or {}).get("options") or {}
            for name, option in options.items():
                if option.get("required") and ("default" in option or name in values):
                    problems.append(f"{role} {entry} {name}: required, yet it has a default")
                if name not in values:
                    continue
                value = values[name]
                if templated(value):
                    if "default" in option:
                        problems.append(f"{role} {entry} {name}: a templated default ({value!r}) in "
                                        "defaults/main.yml, a default in the spec")
                    if "default" not in option.get("description", "").lower():
                        problems.append(f"{role} {entry} {name}: templated default, and the description "
                                        "does not say what it defaults to")
                elif option.get("default") != value or type(option.get("default")) is not type(value):
                    problems.append(f"{role} {entry} {name}: default {option.get('default')!r} in the spec, "
                                    f"{value!r} in defaults/main.yml")
            # the literal defaults pass the entry point's own types (required: checked above)
            unrequired = {n: {k: v for k, v in copy.deepcopy(o).items() if k != "required"}
                          for n, o in options.items()}
            literal = {n: v for n, v in values.items() if n in options and not templated(v)}
            errors = ArgumentSpecValidator(unrequired).validate(literal).error_messages
            problems.extend(f"{role} {entry}: {error}" for error in errors)
    assert not problems, "\n  ".join(["defaults:", *problems])


def test_no_role_internal_variable_is_read_outside_its_role():
    internal = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, ROLES)) + r")__[A-Za-z0-9_]+")
    problems = []
    for top in INTERNAL_SCAN:
        base = REPO / top
        paths = [base] if base.is_file() else sorted(base.rglob("*")) if base.is_dir() else []
        for path in paths:
            rel = path.relative_to(REPO)
            if not path.is_file() or path.suffix not in TEXT_SUFFIXES or SKIPPED_DIRS.intersection(rel.parts):
                continue
            for match in internal.finditer(path.read_text(errors="replace")):
                role = match.group(1)
                if rel.parts[:2] != ("roles", role):
                    problems.append(f"{rel}: {match.group(0)}")
    assert not problems, "\n  ".join(["internal variables of a role read outside it:", *sorted(set(problems))])


def test_ansible_doc_renders_every_entry_point():
    ansible_doc = Path(sys.executable).with_name("ansible-doc")
    if not ansible_doc.exists():
        pytest.skip(f"no ansible-doc beside {sys.executable}")
    proc = subprocess.run([str(ansible_doc), "-t", "role", "-r", str(ROLES_DIR), "--json", *ROLES],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    rendered = json.loads(proc.stdout)
    problems = []
    for role in ROLES:
        entry_points = (rendered.get(role) or {}).get("entry_points") or {}
        if set(entry_points) != set(specs(role)):
            problems.append(f"{role}: ansible-doc shows {sorted(entry_points)}, the spec declares {sorted(specs(role))}")
            continue
        for entry, spec in specs(role).items():
            shown = set(entry_points[entry].get("options") or {})
            if shown != set((spec or {}).get("options") or {}):
                problems.append(f"{role} {entry}: ansible-doc shows the options {sorted(shown)}")
    assert not problems, "\n  ".join(["ansible-doc:", *problems])
