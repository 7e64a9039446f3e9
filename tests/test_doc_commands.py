"""Every command the README and the docs show runs as written, in a fresh shell that entered the environment.

The commands are the lines of the ```bash / ```sh / ```shell / ```console blocks of README.md and docs/**/*.md (in a
console block, the lines that start with `$ `). Each line is split like a shell does (quotes, `#` comments, `\\`
continuations, `&&` / `;` sequences, `( ... )` groups with their own `cd`), and every command in it gets a rule:

- **run**: run for real in a copy of the completed test workspace (`completed_run`: a git + DVC workspace after a
  tiny flow run, its DVC remote beside it), with the virtualenv's bin first on PATH, as `source .venv/bin/activate`
  leaves a shell: `python -m gan restore|sample|check`, `dvc exp show`, `dvc metrics show`, `git log`, ...; it must
  exit 0, and what it names with `--out` / `--to` must exist afterwards.
- **plan**: the long ones are checked up to their plan, without running: `./run.sh KEY=VALUE ...` and
  `python -m flows.pipeline ...` (their arguments parsed by the flow's own parser, then the overrides validated against
  the workspace's params.yaml by the params schema), `python -m gan STAGE --set ...` (`python -m gan check` with the
  same overrides), `python -m flows.sweep FILE ...` (with `--dry-run` added: the sweep file and every trial checked
  against the workspace), `dvc repro` (as `dvc repro --dry`).
- **parse**: the program's own argument parser, and nothing else (argparse's `parse_args` returns, then the process
  exits): the benches and examples, `torchrun`, and DVC commands that would change the workspace or need what it
  lacks (`dvc remote add`, `dvc exp apply` of an experiment it does not have).
- **allowed**: cannot run here (a server, a cluster, the network, a GPU, the whole test suite): the small, explicit
  ALLOWED list below, each with its reason. Their program must still exist, and `--help` of its subcommand work.

Before any rule: the program must exist (on PATH, or the file a path names), every repository path among the
arguments (a script, a sweep file) must exist, and every command must have a rule. A command whose program is gone, a
file that was renamed, or arguments that no longer parse fail the test, naming the page, the line and why.

Placeholders the docs use, mapped to what the test workspace has (PLACEHOLDERS, below): a champion tag such as
`champion-20261127-020013` -> the workspace's newest champion tag; the commit `3f27561` -> the workspace's HEAD;
`/tmp/old`, `/tmp/run` (new folders for `gan restore --to`) -> new folders of the test; `~` and `$HOME` -> a home
folder of the test; `bench-output/folders/NAME` (the workspaces `bench/folders.py` builds) -> a clone of the test
workspace set up as that folder's workspace (`data.dataset: folder` at the size the name gives: `emoji32` -> 32 px),
so a sweep written for it is planned there.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from gan.core.config import ConfigError, load_params

from .conftest import REPO, run

BIN = Path(sys.executable).parent  # the virtualenv's bin: what `source .venv/bin/activate` puts first on PATH
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(\s*)```+\s*([\w+-]*)[^\n]*$")
OPERATORS = {"&&", ";", "||", "|", "(", ")"}
TIMEOUT_S = 600

# Commands that cannot run here, by the words they start with: the reason, and what is still checked ("help": the
# program and its subcommand answer --help; "parse": the arguments parse with the program's own parser; "exists":
# the program, or the script a path names, exists).
ALLOWED: dict[tuple[str, ...], tuple[str, str]] = {
    ("./test.sh",): ("runs the whole test suite (this test is part of it)", "exists"),
    ("scripts/server.sh",): ("starts a Prefect server that runs until stopped", "exists"),
    ("prefect", "server", "start"): ("starts a Prefect server that runs until stopped", "help"),
    ("prefect", "work-pool", "create"): ("needs a running Prefect server (PREFECT_API_URL)", "help"),
    ("prefect", "deploy"): ("needs a running Prefect server (PREFECT_API_URL)", "help"),
    ("prefect", "worker", "start"): ("starts a worker that runs until stopped, on a Prefect server", "help"),
    ("prefect", "deployment", "run"): ("needs a running Prefect server with the deployments", "help"),
    ("dask", "scheduler"): ("starts a Dask scheduler that runs until stopped", "help"),
    ("dask", "worker"): ("starts a Dask worker that runs until stopped, on a scheduler", "help"),
    ("pip", "install"): ("needs a package index (the network), and would change the virtualenv", "exists"),
    ("python", "-m", "mkdocs", "serve"): ("serves the site until stopped (mkdocs build --strict is run)", "help"),
    ("torchrun",): ("trains on several GPUs or machines", "parse"),
}
# Sweeps on a Dask cluster of other machines: planned with --dry-run would need the cluster's git remote; parsed only.
CLUSTER_ONLY = ("--address",)
# `python -m gan sample --class K` needs a class-conditional champion; the test workspace's is unconditional.
NEEDS_CONDITIONAL = "--class"
# DVC commands run for real: they read, or only write what the workspace copy may lose. Others are parsed only.
DVC_RUN = {
    ("exp", "show"),
    ("metrics", "show"),
    ("metrics", "diff"),
    ("params", "diff"),
    ("plots", "show"),
    ("status",),
    ("pull",),
    ("push",),
    ("remote", "list"),
}
GIT_READ = {"log", "tag", "show", "status", "diff"}
SAME_PLAN = {"--dry-run", "--promote", "--json"}  # a sweep planned once with or without them
PATH_SUFFIXES = (".py", ".yaml", ".yml", ".sh", ".md")
OUTPUT_OPTIONS = {"--out", "--to", "--root", "--work-root", "--site-dir", "--tgz"}


@dataclass
class Command:
    """One command of a documented line, the page and line it is on, and the folder it runs in (relative)."""

    page: str
    line: int
    text: str  # the whole line, as documented
    argv: list[str]
    cwd: str = "."

    def where(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


# ---------------------------------------------------------------- reading the commands


def strip_comment(line: str) -> str:
    """A shell line without its `# comment`: a `#` that starts a word, outside quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
            elif ch == "\\" and quote == '"':
                continue
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def shell_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, command line) of every shell block of a Markdown file; continuations joined."""
    out, lang, pending, start = [], None, "", 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = FENCE.match(raw)
        if fence:
            lang = None if lang is not None else fence.group(2).lower()
            continue
        if lang not in SHELL_BLOCKS:
            continue
        line = raw.strip()
        if lang == "console":
            if not line.startswith("$ ") and not pending:
                continue  # output
            line = line.removeprefix("$ ")
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        line = strip_comment(line).strip()
        if line:
            out.append((start, line))
    return out


def split_line(page: str, number: int, line: str) -> list[Command]:
    """The commands of one line, each with the folder a preceding `cd` of its group moved to."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    commands, words, cwd, stack = [], [], ".", []

    def flush() -> None:
        nonlocal cwd
        if not words:
            return
        if words[0] == "cd":
            assert len(words) == 2, f"{page}:{number}: cd takes one folder: {line}"
            cwd = os.path.normpath(os.path.join(cwd, words[1]))
        else:
            commands.append(Command(page, number, line, list(words), cwd))
        words.clear()

    for token in lexer:
        if token in OPERATORS:
            flush()
            if token == "(":
                stack.append(cwd)
            elif token == ")":
                cwd = stack.pop()
            elif token in ("|", "||"):
                pass  # each side is checked as a command of its own
        else:
            words.append(token)
    flush()
    return commands


def documented_commands() -> list[Command]:
    commands = []
    for path in DOC_FILES:
        page = str(path.relative_to(REPO))
        for number, line in shell_lines(path):
            commands.extend(split_line(page, number, line))
    return commands


# ---------------------------------------------------------------- placeholders


@dataclass
class Workspace:
    """Where the commands run, and what the docs' placeholders map to there."""

    root: Path
    home: Path
    scratch: Path
    champion_tag: str
    head: str
    env: dict = field(default_factory=dict)

    def expand(self, word: str) -> str:
        word = word.replace("${HOME}", str(self.home)).replace("$HOME", str(self.home))
        if word == "~" or word.startswith("~/"):
            word = str(self.home) + word[1:]
        word = re.sub(r"\bchampion-\d{8}-\d{6}\b", self.champion_tag, word)
        if word == "3f27561":
            word = self.head[:7]
        for name in ("old", "run"):
            if word == f"/tmp/{name}":
                word = str(self.scratch / name)
        return word


def placeholder_workspace(ws: Workspace, cwd: str) -> Path:
    """`bench-output/folders/NAME`: a clone of the test workspace set up as bench/folders.py sets up NAME (its
    settings: a folder source at the size the name gives), committed, so a sweep file written for it plans there."""
    folder = ws.root / cwd
    match = re.fullmatch(r"bench-output/folders/([a-z]+)(\d+)(-[\w-]+)?", cwd)
    if folder.exists() or not match:
        return folder
    run(["git", "clone", "-q", str(ws.root), str(folder)], ws.root)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["data"].update(dataset="folder", source=str(ws.home / match.group(1)), resolution=int(match.group(2)))
    params["data"]["mirrors"] = []
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    load_params(folder / "params.yaml")
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", f"the {cwd} workspace"], folder)
    return folder


# ---------------------------------------------------------------- rules


PARSE_ONLY = textwrap.dedent(
    """
    import argparse, json, os, runpy, sys
    kind, target, *args = sys.argv[1:]
    original, depth = argparse.ArgumentParser.parse_known_args, [0]

    def parse_known_args(self, args=None, namespace=None):
        # The outermost call made by a parse_args (argparse's, or a subclass's such as DVC's) is the program's own
        # parse; subcommands' parsers are called inside it, and a program's pre-parses of a few flags (DVC's) are not
        # called by a parse_args. Refused arguments exit 2 with the parser's message, as parse_args would; parsed
        # ones are printed, and the process ends before the program does anything.
        caller = sys._getframe(1).f_code.co_name
        depth[0] += 1
        try:
            ns, extra = original(self, args, namespace)
        finally:
            depth[0] -= 1
        if depth[0] == 0 and caller == "parse_args":
            if extra:
                print(f"unrecognized arguments: {' '.join(extra)}", file=sys.stderr, flush=True)
                os._exit(2)
            print("PARSED " + json.dumps(vars(ns), default=str), flush=True)
            os._exit(0)
        return ns, extra

    argparse.ArgumentParser.parse_known_args = parse_known_args
    sys.argv = [target, *args]
    if kind == "module":
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
        runpy.run_path(target, run_name="__main__")
    print("the program ended without parsing its arguments", file=sys.stderr)
    os._exit(3)
    """
)


def environment(ws: Workspace) -> dict:
    """A shell after `source .venv/bin/activate`: the virtualenv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}", VIRTUAL_ENV=str(BIN.parent), HOME=str(ws.home))
    return env


def execute(argv: list[str], cwd: Path, ws: Workspace) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, cwd=cwd, env=environment(ws), capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        return subprocess.CompletedProcess(argv, 124, err.stdout or "", f"timed out after {TIMEOUT_S} s")


def parse_only(kind: str, target: str, args: list[str], cwd: Path, ws: Workspace) -> tuple[str | None, dict]:
    """(why it failed or None, the parsed arguments) of `target` (a module or a script) with `args`."""
    proc = execute([sys.executable, "-c", PARSE_ONLY, kind, target, *args], cwd, ws)
    parsed = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PARSED ")), None)
    if proc.returncode != 0 or parsed is None:
        return f"its arguments do not parse (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}", {}
    return None, json.loads(parsed.removeprefix("PARSED "))


def failed(proc: subprocess.CompletedProcess, what: str) -> str | None:
    if proc.returncode == 0:
        return None
    return f"{what} exited {proc.returncode}:\n{(proc.stdout[-1500:] + proc.stderr[-2500:]).strip()}"


def default_params(cwd: Path, ws: Workspace) -> Path:
    """The params.yaml a documented command's settings are validated against: the project's own (what a fresh clone
    has; the test workspace's are tiny), or a placeholder workspace's."""
    return REPO / "params.yaml" if cwd == ws.root else cwd / "params.yaml"


def validate_overrides(overrides: list[str], params: Path) -> str | None:
    try:
        load_params(params, overrides)
    except ConfigError as err:
        return f"the settings are refused by the params schema: {err}"
    return None


def allowed_rule(argv: list[str]) -> tuple[tuple[str, ...], tuple[str, str]] | None:
    for words, rule in sorted(ALLOWED.items(), key=lambda item: -len(item[0])):
        if tuple(argv[: len(words)]) == words:
            return words, rule
    return None


def program_problem(argv: list[str], cwd: Path) -> str | None:
    """Why the program of `argv` does not exist here (None: it does)."""
    program = argv[0]
    if "/" in program:
        path = cwd / program
        if program.startswith(".venv/bin/"):
            path = BIN / program.removeprefix(".venv/bin/")
        if not path.is_file() or not os.access(path, os.X_OK):
            return f"{program}: no such executable file"
        return None
    if program in ("export", "source"):
        return None
    if shutil.which(program, path=f"{BIN}:{os.environ.get('PATH', '')}") is None:
        return f"{program}: command not found (in the virtualenv or on PATH)"
    if program == "python" and len(argv) > 2 and argv[1] == "-m":
        import importlib.util

        module = argv[2]
        if importlib.util.find_spec(module.split(".")[0]) is None:
            return f"python -m {module}: no such module"
    return None


def path_problems(argv: list[str], cwd: Path) -> list[str]:
    """Repository paths among the arguments (scripts, sweep files, folders of the repository) that do not exist."""
    problems = []
    for previous, word in zip(["", *argv], argv, strict=False):
        if previous in OUTPUT_OPTIONS or word.startswith(("-", "/", "~", "$")) or "://" in word or "=" in word:
            continue
        if word and (word.endswith(PATH_SUFFIXES) or Path(word).parts[0] in repo_top()):
            if not Path(os.path.normpath(cwd / word)).exists():
                problems.append(f"{word}: no such file or folder")
    return problems


@functools.cache
def repo_top() -> set[str]:
    """The names at the top of the repository that git tracks (bench, docs, run.sh, ...), data/ aside."""
    files = run(["git", "ls-files"], REPO).stdout.split()
    return {f.split("/")[0] for f in files} - {"data"}


def rule_of(argv: list[str]) -> str | None:
    """Which rule a command (its words after the placeholders) is checked by; None: none fits."""
    python = argv[0] == "python"
    module = argv[2] if python and len(argv) > 2 and argv[1] == "-m" else None
    if allowed_rule(argv):
        return "allowed"
    if argv[0] in ("export", "source"):
        return argv[0]
    if argv[0] == "./run.sh" or module == "flows.pipeline":
        return "plan: the flow's settings"
    if module == "flows.sweep":
        return "parse" if any(a.split("=")[0] in CLUSTER_ONLY for a in argv) else "plan: sweep --dry-run"
    if module == "gan":
        sub = argv[3] if len(argv) > 3 else ""
        if sub in ("restore", "sample"):
            return "parse" if NEEDS_CONDITIONAL in argv else "run"
        if sub in ("check", "") or sub.startswith("-"):
            return "run"
        return "plan: gan check"
    if module in ("mkdocs", "gan.core.codedeps"):
        return "run"
    if python and len(argv) > 1 and argv[1].endswith(".py"):
        return "parse"
    if argv[0] == "dvc" and len(argv) > 1:
        words = tuple(w for w in argv[1:3] if not w.startswith("-"))
        if words[:1] == ("repro",):
            return "plan: dvc repro --dry"
        return "run" if words[:2] in DVC_RUN or words[:1] in DVC_RUN else "parse"
    if argv[0] == "git" and len(argv) > 1 and argv[1] in GIT_READ:
        return "run"
    return None


def check(cmd: Command, ws: Workspace) -> tuple[str | None, str | None]:
    """Run (or plan, or parse) one documented command: (its rule, why it fails or None)."""
    argv = [ws.expand(w) for w in cmd.argv]
    if argv[0] == ".venv/bin/python":
        argv[0] = "python"
    cwd = placeholder_workspace(ws, cmd.cwd) if cmd.cwd != "." else ws.root
    rule = rule_of(argv)
    if problem := program_problem(argv, cwd):
        return rule, problem
    if problems := path_problems(argv, cwd):
        return rule, "; ".join(problems)
    python = [sys.executable, *argv[1:]] if argv[0] == "python" else None
    module = argv[2] if python and len(argv) > 2 and argv[1] == "-m" else None
    target = ("module", module, argv[3:]) if module else ("script", str(cwd / argv[1]), argv[2:]) if python else None

    if rule is None:
        return rule, "no rule for this command: add one to tests/test_doc_commands.py (run, plan, parse or ALLOWED)"
    if rule == "allowed":
        words, (_, what) = allowed_rule(argv)
        if what == "help":
            head = [sys.executable, *words[1:]] if words[0] == "python" else list(words)
            return rule, failed(execute([*head, "--help"], cwd, ws), f"{' '.join(words)} --help")
        if what == "parse":
            if argv[0] == "torchrun":
                return rule, parse_only("module", "torch.distributed.run", argv[1:], cwd, ws)[0]
            return rule, parse_only(*target, cwd, ws)[0]
        return rule, None  # the program exists: checked above
    if rule == "export":
        ok = all(re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", w) for w in argv[1:])
        return rule, None if ok else "expected export NAME=VALUE"
    if rule == "source":
        ok = argv[1:] == [".venv/bin/activate"] and (BIN / "activate").is_file()
        return rule, None if ok else f"source {' '.join(argv[1:])}: expected .venv/bin/activate ({BIN / 'activate'})"
    if rule == "plan: the flow's settings":  # parsed by the flow's own parser, then the settings validated
        args = argv[1:] if argv[0] == "./run.sh" else argv[3:]
        problem, parsed = parse_only("module", "flows.pipeline", args, cwd, ws)
        return rule, problem or validate_overrides(parsed.get("overrides", []), default_params(cwd, ws))
    if rule == "plan: sweep --dry-run":
        dry = python if "--dry-run" in argv else [*python, "--dry-run"]
        return rule, failed(execute(dry, cwd, ws), "the sweep's plan (--dry-run)")
    if rule == "plan: gan check":  # the stage's name and options parsed, its overrides validated by `gan check`
        problem = parse_only(*target, cwd, ws)[0]
        check_cmd = [*python[:3], "check", "--params", str(default_params(cwd, ws)), *argv[4:]]
        return rule, problem or failed(execute(check_cmd, cwd, ws), "python -m gan check")
    if rule == "plan: dvc repro --dry":
        return rule, failed(execute([*argv, "--dry"], cwd, ws), "dvc repro --dry")
    if rule == "parse":
        if python and not module and "parse_args" not in (cwd / argv[1]).read_text(encoding="utf-8"):
            if argv[2:]:  # a script without an argument parser takes no arguments; it is compiled, not run
                return rule, f"{argv[1]} takes no arguments (it has no argument parser)"
            return rule, failed(execute([sys.executable, "-m", "py_compile", argv[1]], cwd, ws), "py_compile")
        if argv[0] == "dvc":
            return rule, parse_only("module", "dvc", argv[1:], cwd, ws)[0]
        return rule, parse_only(*target, cwd, ws)[0]
    # run
    problem = failed(execute(python or argv, cwd, ws), " ".join(argv[:4]))
    outputs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--out", "--to") and module == "gan"]
    missing = [o for o in outputs if not (cwd / o).exists()]
    return rule, problem or (f"it wrote no {', '.join(missing)}" if missing else None)


# ---------------------------------------------------------------- tests


def test_documented_commands_are_found_and_each_has_a_program_its_files_and_a_rule():
    """Cheap: the blocks are read, and every command's program and repository files exist here."""
    commands = documented_commands()
    pages = {c.page for c in commands}
    assert {"README.md", "docs/run.md", "docs/versions.md", "docs/sweeps.md"} <= pages, sorted(pages)
    assert len(commands) >= 40, len(commands)
    problems = []
    for cmd in commands:
        argv = [w.replace("$HOME", "/home/x") for w in cmd.argv]
        if argv[0] == ".venv/bin/python":
            argv[0] = "python"
        problem = program_problem(argv, REPO) or "; ".join(path_problems(argv, REPO / cmd.cwd))
        if not problem and rule_of(argv) is None:
            problem = "no rule for this command: add one (run, plan, parse or ALLOWED)"
        if problem:
            problems.append(f"{cmd.where()}\n    {problem}")
    assert not problems, "documented commands that cannot run as written:\n" + "\n".join(problems)


def test_splitting_lines_as_a_shell_does():
    got = split_line("p", 1, "(cd a/b && python -m flows.sweep ../../s.yaml) && dvc exp show --keep 'x|y$'")
    assert [(c.argv, c.cwd) for c in got] == [
        (["python", "-m", "flows.sweep", "../../s.yaml"], "a/b"),
        (["dvc", "exp", "show", "--keep", "x|y$"], "."),
    ]
    assert strip_comment("./run.sh a=1   # install, then run") == "./run.sh a=1"
    assert strip_comment("dvc exp show --keep 'a#b' # c") == "dvc exp show --keep 'a#b'"


def test_run_sh_says_how_to_enter_the_environment_and_keeps_the_flows_exit_status(tmp_path):
    """./run.sh with its install step and the flow replaced by stand-ins: it prints the hint and exits as the flow."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    shutil.copy2(REPO / "run.sh", tmp_path / "run.sh")
    (tmp_path / "scripts" / "setup.sh").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / ".venv" / "bin" / "python").write_text('#!/bin/sh\necho "flow $*"\nexit "${FLOW_EXIT:-0}"\n')
    for f in (tmp_path / "scripts" / "setup.sh", tmp_path / ".venv" / "bin" / "python"):
        f.chmod(0o755)
    for code in (0, 3):
        proc = subprocess.run(["./run.sh", "train.kimg=1"], cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "FLOW_EXIT": str(code)})  # fmt: skip
        assert proc.returncode == code, proc
        assert "flow -m flows.pipeline train.kimg=1" in proc.stdout
        assert "source .venv/bin/activate" in proc.stderr


@pytest.mark.slow
def test_documented_commands_run_as_written(completed_run, tmp_path):
    """Each documented command run, planned or parsed in a copy of the completed workspace (see the module's doc)."""
    repo, _, _ = completed_run
    tags = run(["git", "tag", "-l", "champion-*", "--sort=-creatordate"], repo).stdout.split()
    assert tags, "the completed workspace has no champion tag"
    home = tmp_path / "home"
    home.mkdir()
    ws = Workspace(repo, home, tmp_path / "scratch", tags[0], run(["git", "rev-parse", "HEAD"], repo).stdout.strip())
    ws.scratch.mkdir()
    done, problems, rules = set(), [], {}
    for cmd in documented_commands():
        key = (cmd.cwd, tuple(w for w in cmd.argv if w not in SAME_PLAN))
        if key in done:
            continue
        done.add(key)
        rule, problem = check(cmd, ws)
        rules[rule] = rules.get(rule, 0) + 1
        if problem:
            problems.append(f"{cmd.where()}\n    [{rule}] {problem}")
    print(f"{len(done)} distinct documented commands: {rules}")
    assert not problems, f"{len(problems)} documented command(s) fail as written:\n" + "\n".join(problems)
