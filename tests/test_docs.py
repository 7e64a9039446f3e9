"""The documentation: the MkDocs site builds with --strict (every page in the nav, every link and anchor valid), and
the README stays short, opens with the two set-up commands, and links only to files that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from markdown.extensions.toc import slugify

from .conftest import REPO

README = REPO / "README.md"
MAX_README_LINES = 250
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target), ![alt](target)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def test_mkdocs_site_builds_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        print(proc.stderr)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()


def anchors(md: Path) -> set[str]:
    """The heading ids MkDocs gives a page (the toc extension's slugify)."""
    text = FENCE.sub("", md.read_text(encoding="utf-8"))
    return {slugify(title, "-") for title in HEADING.findall(text)}


def relative_links(md: Path) -> list[str]:
    text = FENCE.sub("", md.read_text(encoding="utf-8"))
    targets = LINK.findall(text)
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)]  # not http:, https:, mailto:, ...


def test_readme_is_short_opens_with_the_setup_commands_and_its_links_exist() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; at most {MAX_README_LINES}"

    top = [line.strip() for line in lines[:20]]
    run = next((i for i, line in enumerate(top) if line.startswith("./run.sh ")), None)
    test = next((i for i, line in enumerate(top) if line.startswith("./test.sh ")), None)
    assert run is not None and test is not None, "the first 20 lines of README.md must show ./run.sh and ./test.sh"
    assert run < test and "install" in top[run] and "install" in top[test]

    links = relative_links(README)
    assert any(t.startswith("docs/") and t.endswith(".png") for t in links), "README.md shows no sample image"
    broken = []
    for target in links:
        path, _, fragment = target.partition("#")
        file = (README.parent / path).resolve() if path else README
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target}: {path or README.name} has no heading #{fragment}")
    assert not broken, "README.md links to what does not exist:\n" + "\n".join(broken)
