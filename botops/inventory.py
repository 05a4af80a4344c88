"""Check an inventory and a --limit before a run, so bad input fails before anything changes."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import jsonschema
import yaml

from botops import profiles
from botops.report import shown
from botops.runner import resolve_inventory

SCHEMA_FILE = Path(__file__).with_name("inventory_schema.yml")

# what a --limit may hold: host and group names, patterns, commas, ranges; never shell or path tricks
LIMIT_PATTERN = re.compile(r"^[A-Za-z0-9_.,:*!&\[\]~-]{1,2000}$")


class InventoryError(ValueError):
    pass


def check_limit(limit: str | None, flag: str = "--limit") -> None:
    """A --limit is host and group names, patterns, commas and ranges (never shell or path tricks)."""
    if limit is not None and not LIMIT_PATTERN.match(limit):
        raise InventoryError(
            f"{flag} {shown(limit)} is not a valid host pattern (bot or group names separated by commas, "
            "at most 2000 characters, e.g. --limit=bot01,vanta)"
        )


def hosts(inventory: str | None, limit: str | None = None, check_vars: bool = False,
          flag: str = "--limit") -> tuple[Path, list[str]]:
    """Parse the inventory (malformed or empty is an error) and return the bots the limit selects.

    With check_vars, also check every selected bot's variables against the inventory schema and
    its family's profile (which must itself be valid), so that a wrong value fails before anything
    changes. `flag` is the option the limit came from, for the messages (--limit, --bot)."""
    from ansible import constants
    from ansible.inventory.manager import InventoryManager

    constants.HOST_PATTERN_MISMATCH = "ignore"  # an unmatched --limit is reported below, in one sentence

    try:
        path = resolve_inventory(inventory)
    except ValueError as exc:
        raise InventoryError(str(exc)) from None
    check_limit(limit, flag)
    try:
        manager = InventoryManager(loader=data_loader(), sources=[str(path)], parse=True)
    except InventoryError:
        raise
    except Exception as exc:  # ansible raises several types for a broken file
        raise InventoryError(f"inventory {path} cannot be parsed: {exc}") from None
    known = sorted(h.name for h in manager.get_hosts() if h.name != "localhost")
    if not known:
        raise InventoryError(f"inventory {path} is malformed or holds no bots (check its YAML and groups)")
    if limit:
        listed = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
        groups = sorted(g for g in manager.groups if g not in ("all", "ungrouped"))
        unknown = unknown_terms(manager, limit)
        if unknown:
            hint = close_names(unknown, known + groups)
            raise InventoryError(
                f"{flag} {shown(limit)} names what is no bot or group of the inventory: {', '.join(unknown)}"
                f"{hint} (bots: {listed}; groups: {', '.join(groups)}); nothing was run")
        manager.subset(limit)
        selected = sorted(h.name for h in manager.get_hosts() if h.name != "localhost")
        if not selected:
            raise InventoryError(f"{flag} {shown(limit)} matches no bot (bots: {listed}; groups: {', '.join(groups)})")
    else:
        selected = known
    if check_vars:
        problems, families, loaded = _check_bot_vars(manager, selected)
        if problems:
            raise InventoryError(f"inventory {path} has wrong bot variables:\n  " + "\n  ".join(problems))
        problems = check_profiles(families, loaded)
        if problems:
            raise InventoryError(f"the profiles of the targeted bots are invalid (searched: {profiles.search_path_text()}):\n  "
                                 + "\n  ".join(problems))
    return path, selected


def unknown_terms(manager, limit: str) -> list[str]:
    """The terms of a limit that match no bot and name no group: every name must match, or a typo
    in a list (bot01,bot99) would quietly run on the others. Patterns (bot0*, ~regex) count as
    names: one that matches nothing is a mistake too."""
    from ansible.inventory.manager import split_host_pattern

    unknown = []
    for term in split_host_pattern(limit):
        name = term.lstrip("!&")
        if not name or name in ("all", "*") or name in manager.groups:
            continue
        if not [h for h in manager.get_hosts(name) if h.name != "localhost"]:
            unknown.append(name)
    return unknown


def close_names(unknown: list[str], names: list[str]) -> str:
    """'; did you mean bot09 for bot99?' for the unknown names close to a known one, else ''."""
    import difflib

    guesses = []
    for name in unknown:
        close = difflib.get_close_matches(name, names, n=2, cutoff=0.6)
        if close:
            guesses.append(f"{' or '.join(close)} for {name}")
    return f"; did you mean {', '.join(guesses)}?" if guesses else ""


def identities(path: Path, names: list[str]) -> dict[str, str]:
    """What each bot is, whatever inventory or spelling names it: '<address>:<bot_root>', the address
    being ansible_host (else the host name), or 'localhost' for a local connection. Two runs whose
    bots share an identity operate the same bots (the front end's fleet lock is keyed by it)."""
    from ansible.inventory.manager import InventoryManager
    from ansible.vars.manager import VariableManager

    manager = InventoryManager(loader=data_loader(), sources=[str(path)], parse=True)
    variables = VariableManager(loader=manager._loader, inventory=manager)
    found = {}
    for name in names:
        host_vars = _vars(variables, manager, name)
        root = host_vars.get("bot_root")
        if not isinstance(root, str) or _templated(root):
            found[name] = f"{name}:?"  # no usable root: the name is all that is known
            continue
        if host_vars.get("ansible_connection") == "local":
            address = "localhost"
        else:
            address = host_vars.get("ansible_host") or name
            address = name if not isinstance(address, str) or _templated(address) else address
        found[name] = f"{address}:{os.path.normpath(root)}"
    return found


def bot_variables(path: Path | str, names: list[str], keys: tuple[str, ...]) -> dict[str, dict]:
    """These inventory variables of each bot as the inventory says (hosts, groups, group_vars /
    host_vars, vault files with ANSIBLE_VAULT_PASSWORD_FILE): {bot: {key: value}}. A value that is a
    template (Ansible renders it at run time) or is missing is None."""
    from ansible.inventory.manager import InventoryManager
    from ansible.vars.manager import VariableManager

    manager = InventoryManager(loader=data_loader(), sources=[str(path)], parse=True)
    variables = VariableManager(loader=manager._loader, inventory=manager)
    found: dict[str, dict] = {}
    for name in names:
        host_vars = _vars(variables, manager, name) if manager.get_host(name) is not None else {}
        found[name] = {key: (None if _templated(host_vars.get(key)) else _plain(host_vars.get(key))) for key in keys}
    return found


def data_loader():
    """Ansible's DataLoader, able to read vault-encrypted inventory files the way ansible-playbook
    does: with the password file of ANSIBLE_VAULT_PASSWORD_FILE (or the vault identities of
    ANSIBLE_VAULT_IDENTITY_LIST / ansible.cfg), never prompting."""
    from ansible import constants
    from ansible.cli import CLI
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import VaultSecretsContext

    loader = DataLoader()
    if constants.DEFAULT_VAULT_PASSWORD_FILE or constants.DEFAULT_VAULT_IDENTITY_LIST:
        try:
            secrets = CLI.setup_vault_secrets(loader, vault_ids=list(constants.DEFAULT_VAULT_IDENTITY_LIST),
                                              auto_prompt=False, initialize_context=False)
        except Exception as exc:  # AnsibleError, OSError: a missing or unreadable password file
            raise InventoryError(f"cannot read the vault password: {exc}") from None
        loader.set_vault_secrets(secrets)
        if VaultSecretsContext.current(optional=True) is None:  # inline !vault values decrypt through it
            VaultSecretsContext.initialize(VaultSecretsContext(secrets))
    return loader


def _vars(variables, manager, name: str) -> dict:
    try:
        return variables.get_vars(host=manager.get_host(name), include_hostvars=False)
    except Exception as exc:  # AnsibleParserError and friends, raised by a vars file
        hint = (" (the file is vault-encrypted: give its password file with ANSIBLE_VAULT_PASSWORD_FILE)"
                if "vault" in str(exc).lower() else "")
        raise InventoryError(f"cannot read the variables of bot {name!r}: {exc}{hint}") from None


@functools.lru_cache(maxsize=1)
def _validator():
    schema = yaml.safe_load(SCHEMA_FILE.read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def _plain(value):
    """The inventory value as plain data; templated strings are left for Ansible to render."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if not _templated(v)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value if not _templated(v)]
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, (int, float)):  # Ansible's tagged numbers, named by their plain type in messages
        return float(value) if isinstance(value, float) else int(value)
    return value


def _templated(value):
    return isinstance(value, str) and "{{" in value


def check_bot_vars(manager, names: list[str]) -> list[str]:
    """Problems with the bots' inventory variables, each naming the bot, the key and what is expected."""
    return _check_bot_vars(manager, names)[0]


def check_profiles(families: dict[str, list[str]], loaded: dict[str, object]) -> list[str]:
    """Problems with the profiles of these families ({family: its bots}), each naming the bots,
    the profile file and the key path; `loaded` is what _check_bot_vars loaded of each (the
    profile, or the ProfileError loading it raised)."""
    problems = []
    for family, bots in sorted(families.items()):
        exc = loaded.get(family)
        if isinstance(exc, profiles.ProfileError):
            lines = str(exc).splitlines()
            details = [line.strip() for line in lines[1:]] or lines
            who = ", ".join(bots[:10]) + (" ..." if len(bots) > 10 else "")
            problems += [f"{who}: bot_family {family!r}: {line}" for line in details]
    return problems


def _check_bot_vars(manager, names: list[str]) -> tuple[list[str], dict[str, list[str]], dict[str, object]]:
    """The problems with the bots' variables, the bots of each known family they name, and each of
    those families' profile as loaded once (or the ProfileError loading it raised)."""
    from ansible.vars.manager import VariableManager

    variables = VariableManager(loader=manager._loader, inventory=manager)
    known_families = profiles.available()
    problems = []
    families: dict[str, list[str]] = {}
    loaded: dict[str, object] = {}  # each family's profile, loaded once (or why it cannot be)
    for name in names:
        host_vars = _vars(variables, manager, name)
        data = {k: _plain(v) for k, v in host_vars.items() if k.startswith("bot_") and not _templated(v)}
        for error in _validator().iter_errors(data):
            key = ".".join(str(p) for p in error.absolute_path) or "(bot variables)"
            problems.append(f"{name}: {key}: {profiles.describe_error(error)}")
        family = data.get("bot_family")
        if isinstance(family, str) and family not in known_families:
            problems.append(f"{name}: bot_family: no profile {shown(family)} "
                            f"(expected one of: {', '.join(known_families)})")
        elif isinstance(family, str):
            families.setdefault(family, []).append(name)
            if family not in loaded:
                try:
                    loaded[family] = profiles.load(family)
                except profiles.ProfileError as exc:
                    loaded[family] = exc  # reported by check_profiles, once per family
            profile = loaded[family]
            names_ok = None if isinstance(profile, profiles.ProfileError) else profile["http"]["ports"]
            if names_ok is not None and isinstance(data.get("bot_ports"), dict):
                for port_name in data["bot_ports"]:
                    if port_name not in names_ok:
                        problems.append(f"{name}: bot_ports.{port_name}: not a port of {family} "
                                        f"(expected one of: {', '.join(names_ok)})")
    return list(dict.fromkeys(problems)), families, loaded
