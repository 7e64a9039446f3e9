"""Rewrite the code deps of every stage in dvc.yaml to what `gan.core.codedeps` finds (comments and order kept).

    python scripts/sync_code_deps.py          # then `git diff dvc.yaml`

Each stage's `deps` lists its data first, then the `gan/` files its command can import; this replaces the
`gan/...` lines of each stage with the current list. tests/test_stage_deps.py checks the result.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gan.core.codedeps import stage_code_deps  # noqa: E402


def sync(text: str) -> str:
    out: list[str] = []
    stage = None
    in_deps = False
    for line in text.splitlines():
        m = re.match(r"^  (\w[\w-]*):\s*$", line)
        if m:
            stage, in_deps = m.group(1), False
        if re.match(r"^    deps:\s*$", line):
            in_deps = True
            out.append(line)
            continue
        if in_deps and re.match(r"^      - gan/", line):
            continue  # replaced below, after the data deps
        if in_deps and not re.match(r"^      ", line):
            indent = "      - "
            out.extend(f"{indent}{dep}" for dep in stage_code_deps(stage))
            in_deps = False
        out.append(line)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    path = REPO / "dvc.yaml"
    path.write_text(sync(path.read_text()))
