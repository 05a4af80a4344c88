# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Alembic migrations of a bot release, read without running them.

The revision graph comes from the release's own revision files, parsed (never imported):
`revision`, `down_revision`, the docstring's first line and the botops kind marker.

Contract marker (the convention for every bot, not only the reference bot): a revision that
older code cannot run on carries a module-level `botops_kind = "contract"`, or its docstring's
first line starts with the word "contract". Other kinds are informative ("expand", "initial").

Ledger map: a revision that renames or transforms a ledger column declares how rows written on
its schema map back onto the schema before it, `botops_ledger_map = {"trades": {"qty": "quantity"}}`
(older column: newer column, or an SQL expression over the newer columns). A rollback that brings
the data back from a backup taken before the revision carries the trades written since through
it (botops_ledger); columns not named keep their names.

Migrations themselves run through the alembic command of the bot's Python environment, with the
database URL in the child's environment only (DATABASE_URL, read by the bot's env.py).
"""

from __future__ import annotations

import ast
import configparser
import os
import re
import shutil
import sys
from urllib.parse import quote

CONTRACT_DOC_RE = re.compile(r"^\s*contract\b", re.IGNORECASE)


class MigrationError(Exception):
    """Reading or resolving the migrations failed; the message says why."""


def database_url(database):
    """postgresql:// URL for a botops_pg.Database (user, password, host, port, name)."""
    auth = quote(database.user, safe="")
    if database.password:
        auth += ":" + quote(database.password, safe="")
    host = database.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"postgresql://{auth}@{host}:{database.port}/{quote(database.name, safe='')}"


def alembic_command():
    """The alembic console script of this Python environment, else PATH, else `python -m alembic`."""
    beside = os.path.join(os.path.dirname(sys.executable), "alembic")
    if os.access(beside, os.X_OK):
        return [beside]
    found = shutil.which("alembic")
    if found:
        return [found]
    return [sys.executable, "-m", "alembic"]


def version_dirs(ini_path, cwd=None):
    """Directories holding the revision files, as the alembic.ini says."""
    if not os.path.isfile(ini_path):
        raise MigrationError(f"no alembic config {ini_path}")
    here = os.path.dirname(os.path.abspath(ini_path))
    parser = configparser.ConfigParser(defaults={"here": here})
    try:
        parser.read(ini_path)
        section = parser["alembic"]
        script_location = section.get("script_location")
        version_locations = section.get("version_locations")
        # path_separator since Alembic 1.16, version_path_separator before
        separator = section.get("path_separator") or section.get("version_path_separator") or "space"
    except (configparser.Error, KeyError) as exc:
        raise MigrationError(f"cannot read [alembic] of {ini_path}: {exc}") from None
    if not script_location:
        raise MigrationError(f"{ini_path} has no script_location")
    if ":" in script_location and not os.path.isabs(script_location):
        raise MigrationError(f"{ini_path}: package resource script_location {script_location!r} is not supported")
    base = cwd or here

    def absolute(path):
        return path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))

    if version_locations:
        seps = {"space": None, "os": os.pathsep, ":": ":", ";": ";", "newline": "\n", ",": ","}
        parts = version_locations.split(seps.get(separator, None))
        return [absolute(p.strip()) for p in parts if p.strip()]
    return [os.path.join(absolute(script_location), "versions")]


def _literal(node):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def parse_revision_file(path):
    """{revision, down_revisions, kind, doc} of one revision file, or None when it is not one."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise MigrationError(f"cannot parse revision file {path}: {exc}") from None
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision", "botops_kind",
                                                              "botops_ledger_map"):
                values[target.id] = _literal(value)
    if not isinstance(values.get("revision"), str):
        return None
    down = values.get("down_revision")
    if down is None:
        downs = ()
    elif isinstance(down, str):
        downs = (down,)
    else:
        downs = tuple(down)
    doc = (ast.get_docstring(tree) or "").strip().splitlines()
    first = doc[0].strip() if doc else ""
    kind = values.get("botops_kind")
    if not isinstance(kind, str):
        kind = "contract" if CONTRACT_DOC_RE.match(first) else None
    elif kind != "contract" and CONTRACT_DOC_RE.match(first):
        kind = "contract"
    ledger_map = values.get("botops_ledger_map")
    if ledger_map is not None and not (isinstance(ledger_map, dict) and all(
            isinstance(t, str) and isinstance(m, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in m.items())
            for t, m in ledger_map.items())):
        raise MigrationError(f"{path}: botops_ledger_map must be a literal {{table: {{older column: newer column or "
                             f"SQL expression}}}}, got {ledger_map!r}")
    return {"revision": values["revision"], "down_revisions": downs, "kind": kind, "doc": first,
            "file": os.path.basename(path), "ledger_map": ledger_map}


class RevisionGraph:
    """The revisions of one release and the walks between two of them."""

    def __init__(self, revisions):
        self.revisions = {r["revision"]: r for r in revisions}
        for rev in self.revisions.values():
            for down in rev["down_revisions"]:
                if down not in self.revisions:
                    raise MigrationError(f"revision {rev['revision']} revises {down}, which is not in the release")
        children = {d for r in self.revisions.values() for d in r["down_revisions"]}
        self.heads = sorted(set(self.revisions) - children)
        self._depth = {}

    @classmethod
    def from_config(cls, ini_path, cwd=None):
        revisions = []
        for directory in version_dirs(ini_path, cwd):
            if not os.path.isdir(directory):
                raise MigrationError(f"no revision directory {directory}")
            for name in sorted(os.listdir(directory)):
                if name.endswith(".py") and not name.startswith("__"):
                    rev = parse_revision_file(os.path.join(directory, name))
                    if rev:
                        revisions.append(rev)
        if not revisions:
            raise MigrationError(f"no revision files for {ini_path}")
        return cls(revisions)

    def __contains__(self, revision):
        return revision in self.revisions

    @property
    def head(self):
        if len(self.heads) != 1:
            raise MigrationError(f"the migrations have {len(self.heads)} heads ({', '.join(self.heads)}): merge them first")
        return self.heads[0]

    def depth(self, revision):
        if revision not in self._depth:
            downs = self.revisions[revision]["down_revisions"]
            self._depth[revision] = 1 + max((self.depth(d) for d in downs), default=0)
        return self._depth[revision]

    def ancestors(self, revision):
        """The revision and everything below it (empty for base, None)."""
        seen, stack = set(), [revision] if revision else []
        while stack:
            rev = stack.pop()
            if rev not in seen:
                seen.add(rev)
                stack.extend(self.revisions[rev]["down_revisions"])
        return seen

    def resolve(self, spec, current):
        """A target as alembic spells it (head, base, -N, +N, a revision id or unique prefix)
        resolved to a revision id (None for base) against this graph and the current revision."""
        spec = str(spec).strip()
        if spec in ("head", "heads"):
            return self.head
        if spec == "base":
            return None
        match = re.fullmatch(r"([+-])(\d+)", spec)
        if match:
            steps = int(match.group(2))
            if match.group(1) == "-":
                rev = current
                for step in range(steps):
                    if rev is None:
                        raise MigrationError(f"cannot go {spec} from {current or 'base'}: base reached")
                    downs = self.revisions[rev]["down_revisions"]
                    if len(downs) > 1:
                        raise MigrationError(f"cannot go {spec} from {current}: {rev} is a merge point")
                    rev = downs[0] if downs else None
                return rev
            rev = current
            for step in range(steps):
                ups = [r for r, info in self.revisions.items() if (rev in info["down_revisions"]) or
                       (rev is None and not info["down_revisions"])]
                if len(ups) != 1:
                    raise MigrationError(f"cannot go {spec} from {current or 'base'}: "
                                         f"{'head reached' if not ups else 'branch point'}")
                rev = ups[0]
            return rev
        if spec in self.revisions:
            return spec
        matches = [r for r in self.revisions if r.startswith(spec)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise MigrationError(f"revision {spec!r} is ambiguous: {', '.join(sorted(matches))}")
        raise MigrationError(f"unknown revision {spec!r} (known: {', '.join(sorted(self.revisions))})")

    def upgrade_path(self, current, target):
        """Revisions an upgrade from current to target applies, in order."""
        revs = self.ancestors(target) - self.ancestors(current)
        return sorted(revs, key=lambda r: (self.depth(r), r))

    def downgrade_path(self, current, target):
        """Revisions a downgrade from current to target undoes, in order."""
        revs = self.ancestors(current) - self.ancestors(target)
        return sorted(revs, key=lambda r: (self.depth(r), r), reverse=True)

    def is_ancestor(self, older, newer):
        """True when `older` is at or below `newer` (base is below everything)."""
        return older is None or older in self.ancestors(newer)

    def contracts(self, revisions):
        return [r for r in revisions if self.revisions[r]["kind"] == "contract"]

    def describe(self, revisions):
        return [{"revision": r, "kind": self.revisions[r]["kind"], "description": self.revisions[r]["doc"]}
                for r in revisions]
