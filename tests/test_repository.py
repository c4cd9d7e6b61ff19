"""The repository stands alone: no file points outside it, relative links resolve, and the license it declares is
there."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from open_r1_nb.paths import REPO_ROOT

# Files of the design notes that lived beside the repository and never in it. Spelled in pieces so that this file
# does not match itself.
OUTSIDE_NAMES = ("DESIGN" + ".md", "SEED" + ".md", "../" + "shared", "<this " + "repo>")
_PARENT = re.compile(r"(?:\.\./)+[\w.-]+(?:/[\w.-]+)*")
_MD_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def _files() -> list[Path]:
    """Tracked files and new ones not ignored: what a commit would hold."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [REPO_ROOT / line for line in out.splitlines() if (REPO_ROOT / line).is_file()]


def _texts():
    for path in _files():
        if path.name == "LICENSE":
            continue
        try:
            yield path, path.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary files (figures)


def test_no_file_refers_to_a_path_outside_the_repository():
    found = []
    for path, text in _texts():
        for name in OUTSIDE_NAMES:
            if name in text:
                found.append(f"{path.relative_to(REPO_ROOT)}: {name}")
        for match in _PARENT.finditer(text):
            # A ../ path may be fine when it stays inside the repository, seen from the file's folder.
            target = (path.parent / match.group(0)).resolve()
            if not target.is_relative_to(REPO_ROOT.resolve()):
                found.append(f"{path.relative_to(REPO_ROOT)}: {match.group(0)}")
    assert not found, "references outside the repository:\n" + "\n".join(found)


def test_relative_links_in_the_documentation_resolve():
    broken = []
    for path, text in _texts():
        if path.suffix != ".md":
            continue
        for target in _MD_LINK.findall(text):
            if re.match(r"^[a-z]+:", target):  # https:, mailto:
                continue
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(REPO_ROOT)}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_the_declared_license_is_there():
    text = (REPO_ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a pointer to it
    assert 'license = { text = "Apache-2.0" }' in (REPO_ROOT / "pyproject.toml").read_text()
