"""docs/architecture.md and the README's glossary name files that exist, and the architecture names them all.

What this test reads:

- the whole of docs/architecture.md, and the README's `## Glossary` section (up to the next `## `);
- in them, every inline code span (`...`) and, in fenced blocks (the layer picture), every word with
  a `/`. A token is a repository path when it contains a `/` or ends in .py, .yml or .md
  (`plugins/modules/bot_deploy.py`, `roles/bot_guard`, `tasks.py`).

A path must be in the repository: a file git knows (tracked, or new and not ignored) or a directory
holding one. Not checked, because they are not repository files: tokens with a placeholder or a
space (`<bot_root>/current`, `artifacts/<playbook>/<run id>/`, `profiles/*.yml`), absolute paths and
API paths (`/api/health`), paths outside the repository (`../`), URLs, flags (`--target=latest`), and
paths that .gitignore ignores, which are written at run time (`inventory/sandbox/hosts.yml`).

And so that the architecture stays complete: every playbook (playbooks/*.yml), every module
(plugins/modules/*.py) and every module_utils file appears in docs/architecture.md by its path.

Each test lists everything missing at once.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARCHITECTURE = REPO / "docs" / "architecture.md"
README = REPO / "README.md"

CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
FENCE = re.compile(r"^\s*```")
FENCED_WORD = re.compile(r"[^\s()\[\],;:'\"]*/[^\s()\[\],;:'\"]*")
PLACEHOLDER = re.compile(r"[<>{}*$|=~\s]")
PATH_SUFFIXES = (".py", ".yml", ".md")


def glossary(text: str) -> str:
    """The README's glossary section: from `## Glossary` up to the next `## ` heading."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().lower() == "## glossary"), None)
    assert start is not None, "README.md has no '## Glossary' section"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:end])


def tokens(text: str) -> list[str]:
    """Inline code spans outside fenced blocks, and words with a '/' inside them."""
    found, fenced, prose = [], False, []
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            found.extend(FENCED_WORD.findall(line))
        else:
            prose.append(line)
    found.extend(CODE_SPAN.findall("\n".join(prose)))
    return found


def repository_path(token: str) -> str | None:
    """The repository path a token names, or None when it names no repository file."""
    token = token.strip().rstrip(".,;:")
    if not token or PLACEHOLDER.search(token) or "://" in token:
        return None
    if token.startswith(("-", "/", "../", "(")):
        return None
    if "/" not in token and not token.endswith(PATH_SUFFIXES):
        return None
    return token.removeprefix("./").rstrip("/")


def git(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], input=stdin, capture_output=True, text=True,
                          check=False)


def repository_files() -> set[str] | None:
    """The files git knows (tracked, or new and not ignored); None without git."""
    try:
        listed = git("ls-files", "--cached", "--others", "--exclude-standard")
    except OSError:
        return None
    if listed.returncode != 0:
        return None
    return set(listed.stdout.splitlines())


def ignored(paths: list[str]) -> set[str]:
    """Those of these paths .gitignore ignores (as a file or as a directory)."""
    if not paths:
        return set()
    asked = [p for path in paths for p in (path, path + "/")]
    try:
        result = git("check-ignore", "--no-index", "--stdin", stdin="\n".join(asked) + "\n")
    except OSError:
        return set()
    return {line.rstrip("/") for line in result.stdout.splitlines()}


def missing(paths: list[str]) -> list[str]:
    files = repository_files()
    if files is None:  # not a git checkout: the working tree is all there is
        return sorted({p for p in paths if not (REPO / p).exists()})
    directories = {parent.as_posix() for f in files for parent in Path(f).parents} - {"."}
    absent = sorted({p for p in paths if p not in files and p not in directories})
    runtime = ignored(absent)
    return [p for p in absent if p not in runtime]


def named_paths(text: str) -> list[str]:
    return sorted({path for token in tokens(text) if (path := repository_path(token))})


def test_tokens_and_paths():
    text = "\n".join([
        "`plugins/modules/bot_deploy.py`, `roles/bot_guard`, `tasks.py`, `profiles/`, `bot_family`,",
        "`<bot_root>/current`, `artifacts/<playbook>/<run id>/`, `/api/health`, `--target=latest`,",
        "`state: list`, `manifest.json`, `../shared/runbooks`, `profiles/*.yml`",
        "```",
        " botops <task>   tasks.py -> botops/<x>.py (botops/fleet_task.py)",
        "```",
    ])
    assert named_paths(text) == ["botops/fleet_task.py", "plugins/modules/bot_deploy.py", "profiles",
                                 "roles/bot_guard", "tasks.py"]
    assert missing(["plugins/modules/bot_deploy.py", "roles/bot_guard", "plugins/modules/bot_nothing.py",
                    "inventory/sandbox/hosts.yml"]) == ["plugins/modules/bot_nothing.py"]


def test_every_path_named_exists():
    named = {
        "docs/architecture.md": named_paths(ARCHITECTURE.read_text()),
        "README.md (glossary)": named_paths(glossary(README.read_text())),
    }
    assert all(named.values()), f"no repository path found in {[doc for doc, paths in named.items() if not paths]}"
    problems = [f"{doc}: {path}" for doc, paths in named.items() for path in missing(paths)]
    assert not problems, "paths named that are not in the repository:\n  " + "\n  ".join(problems)


def test_architecture_names_every_playbook_module_and_module_utils():
    text = ARCHITECTURE.read_text()
    expected = [f"playbooks/{p.name}" for p in sorted((REPO / "playbooks").glob("*.yml"))]
    expected += [f"plugins/modules/{p.name}" for p in sorted((REPO / "plugins" / "modules").glob("*.py"))]
    expected += [f"plugins/module_utils/{p.name}" for p in sorted((REPO / "plugins" / "module_utils").glob("*.py"))]
    absent = [path for path in expected if f"`{path}`" not in text]
    assert not absent, "docs/architecture.md does not name (as `path`):\n  " + "\n  ".join(absent)
