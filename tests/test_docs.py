"""The documentation: the MkDocs site builds with --strict (every page in the nav, every link and anchor valid), the
README stays short, opens with the two set-up commands, and links only to files that exist, and the configuration
page's reference is what the params schema gives (every setting, its values, default and description)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from markdown.extensions.toc import slugify

from gan.core.config import Params

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


def config_reference():
    """scripts/config_reference.py, imported (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("config_reference", REPO / "scripts" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_page_lists_every_setting_as_the_schema_gives_it() -> None:
    ref = config_reference()
    page = ref.PAGE.read_text(encoding="utf-8")
    keys = [f"{s}.{n}" for s, section in Params.model_fields.items() for n in section.annotation.model_fields]
    missing = [k for k in keys if f"| `{k}` |" not in page]
    assert not missing, f"docs/configuration.md lacks {missing}: run python scripts/config_reference.py"
    undescribed = [k for k in keys if not Params.model_fields[k.split(".")[0]].annotation.model_fields[
        k.split(".")[1]].description]  # fmt: skip
    assert not undescribed, f"give these settings a Field(description=...) in gan/core/config.py: {undescribed}"
    assert ref.render(page) == page, (
        "docs/configuration.md's reference differs from what gan/core/config.py gives: run "
        "python scripts/config_reference.py"
    )
    assert ref.main(["--check"]) == 0
