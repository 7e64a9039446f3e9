"""Recording runs (git commit, champion tag, `dvc push`) and restoring them, on a small real git + DVC repo.

The repo here is not the GAN pipeline: one DVC stage that writes a "generator", metrics and samples at the
pipeline's paths in a second, so every git/DVC path (conflicts, a broken or killed push, a fresh clone) runs
for real in seconds. tests/test_recording_e2e.py does the same with the real pipeline and Prefect flow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from gan.core.paths import Paths
from gan.lifecycle import gitrepo, versions
from gan.lifecycle.champion import promote
from gan.lifecycle.restore import RestoreError, restore

from .conftest import REPO, run, tag_message

MAKE = """\
import json, pathlib, yaml
seed = yaml.safe_load(open("params.yaml"))["train"]["seed"]
d = pathlib.Path("data")
for sub in ("models", "metrics", "samples"):
    (d / sub).mkdir(parents=True, exist_ok=True)
(d / "models/generator.pt").write_bytes(bytes([seed % 256]) * 300_000)
(d / "metrics/metrics.json").write_text(json.dumps({"fid_classifier": 10.0 + seed}))
(d / "samples/grid.png").write_bytes(b"grid-%d" % seed)
(d / "samples/MODEL_CARD.md").write_text("card %d" % seed)
"""
DVC_YAML = {
    "stages": {
        "train": {
            "cmd": "python make.py",
            "deps": ["make.py"],
            "params": ["train.seed"],
            "outs": ["data/models/generator.pt", "data/samples"],
            "metrics": [{"data/metrics/metrics.json": {"cache": False}}],
        }
    }
}


def git(repo: Path, *args: str) -> str:
    return run(["git", *args], repo).stdout.strip()


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], repo, check=check)


def set_seed(repo: Path, seed: int) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump({"train": {"seed": seed}}))


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    """A git + DVC repo with one stage, committed, its default remote a folder beside it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "make.py").write_text(MAKE)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (repo / "README.md").write_text("mini\n")
    set_seed(repo, 0)
    git(repo, "init", "-q")
    dvc(repo, "init", "-q")
    dvc(repo, "remote", "add", "-d", "store", str(tmp_path / "remote"))
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=u", "-c", "user.email=u@u", "commit", "-qm", "init")
    return repo


def repro(repo: Path) -> None:
    dvc(repo, "repro")


def promote_champion(repo: Path, value: float, when: datetime) -> None:
    """What the flow's gate does on a promotion: the champion folder, then `dvc add` of it."""
    paths = Paths(repo)
    sources = {"generator.pt": paths.generator, "metrics.json": paths.metrics}
    record = {
        "flow_run_id": "run-1",
        "promoted_at": when.isoformat(timespec="seconds"),
        "metrics": {"fid_classifier": value},
        "decision": {"metric": "fid_classifier", "candidate_value": value, "reason": "no champion yet"},
    }
    promote(sources, paths.champion, record)
    dvc(repo, "add", str(Paths(Path(".")).champion))


ROW = {"metric": "fid_classifier", "value": 10.0, "champion_value": None, "promoted": True,
       "flow_run_id": "id-1", "flow_run_name": "brave-otter", "stages_run": "train", "dataset": "x",
       "arch": "dcgan", "epochs": 1}  # fmt: skip


# ---- which files are the pipeline's


def test_pipeline_files_of_this_repository():
    assert versions.pipeline_files(REPO) == [
        "data/.gitignore", "data/history.dvc", "data/metrics/.gitignore", "data/metrics/classifier.json",
        "data/metrics/judge.json", "data/metrics/metrics.json", "data/models/.gitignore", "data/models/champion.dvc",
        "dvc.lock", "params.yaml",
    ]  # fmt: skip
    inputs = versions.stage_inputs(REPO)
    assert "dvc.yaml" in inputs and "gan/training/train.py" in inputs
    assert not [p for p in inputs if p.startswith("data/")]  # outputs of other stages are not git's


# ---- the commit


def test_a_run_commits_exactly_the_pipeline_files_and_reports_the_rest(mini):
    digest = versions.params_digest(mini)
    repro(mini)
    (mini / "README.md").write_text("a user's unrelated edit\n")
    (mini / "notes.txt").write_text("untracked\n")
    (mini / "staged.txt").write_text("staged by the user\n")
    git(mini, "add", "staged.txt")
    before = git(mini, "rev-parse", "HEAD")

    rec = versions.record_run(mini, "brave-otter (id-1)", digest, ROW)

    assert rec.commit and rec.commit != before and git(mini, "rev-parse", "HEAD") == rec.commit
    committed = set(git(mini, "diff-tree", "--no-commit-id", "--name-only", "-r", rec.commit).split())
    assert committed == {"dvc.lock", "data/metrics/metrics.json", "data/models/.gitignore", "data/.gitignore"}
    assert set(rec.files) == committed
    assert set(rec.left_uncommitted) == {"README.md", "notes.txt", "staged.txt"}
    status = run(["git", "status", "--porcelain"], mini).stdout.splitlines()
    assert " M README.md" in status and "?? notes.txt" in status and "A  staged.txt" in status  # untouched
    message = git(mini, "log", "-1", "--format=%B")
    assert message.startswith("gan-pipeline: fid_classifier 10 (champion none), promoted to champion")
    assert "Flow run: brave-otter (id-1)" in message and "Stages run: train" in message
    assert rec.tag is None  # no champion in this commit
    # Nothing changed since: nothing to commit.
    assert versions.record_run(mini, "x", digest, ROW).commit is None


def test_a_new_champion_is_tagged_with_its_metrics_and_resolves_as_champion(mini):
    repro(mini)
    promote_champion(mini, 10.0, datetime(2026, 11, 27, 2, 0, 5, tzinfo=UTC))
    first = versions.record_run(mini, "r1", versions.params_digest(mini), ROW)
    assert first.tag == "champion-20261127-020005"
    assert "data/models/champion.dvc" in first.files
    assert "fid_classifier 10.0" in tag_message(mini, first.tag)
    assert git(mini, "cat-file", "-t", first.tag) == "tag"  # annotated

    set_seed(mini, 1)
    repro(mini)
    versions.record_run(mini, "r2", versions.params_digest(mini), {**ROW, "promoted": False})  # not promoted
    set_seed(mini, 2)
    repro(mini)
    promote_champion(mini, 9.0, datetime(2026, 11, 28, 2, 0, 0, tzinfo=UTC))
    third = versions.record_run(mini, "r3", versions.params_digest(mini), ROW)
    assert third.tag == "champion-20261128-020000"
    assert gitrepo.champion_tags(mini) == [third.tag, first.tag]
    assert gitrepo.resolve(mini, "champion") == third.commit
    assert gitrepo.resolve(mini, first.tag) == first.commit
    # The same second again: a distinct name.
    assert gitrepo.tag(mini, "champion-20261128-020000", "again") == "champion-20261128-020000-2"


def test_a_pipeline_in_a_subfolder_of_a_git_repository_commits_its_own_files(tmp_path):
    top = tmp_path / "mono"
    repo = top / "gan"
    repo.mkdir(parents=True)
    (repo / "make.py").write_text(MAKE)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    set_seed(repo, 0)
    (top / "other.txt").write_text("another project's file\n")
    git(top, "init", "-q")
    dvc(repo, "init", "-q", "--subdir")
    git(top, "add", "-A")
    git(top, "-c", "user.name=u", "-c", "user.email=u@u", "commit", "-qm", "init")
    (top / "other.txt").write_text("edited\n")
    repro(repo)
    rec = versions.record_run(repo, "r", versions.params_digest(repo), ROW)
    committed = set(git(top, "diff-tree", "--no-commit-id", "--name-only", "-r", rec.commit).split())
    assert committed == {"gan/dvc.lock", "gan/data/metrics/metrics.json", "gan/data/models/.gitignore",
                         "gan/data/.gitignore"}  # fmt: skip
    assert rec.left_uncommitted == ["../other.txt"]
    # No remote configured: the one set up lands beside the git repository, not inside its work tree.
    assert versions.push(repo).remote.url == str(tmp_path / "mono-dvc-remote")


def test_commit_uses_a_fallback_identity_where_git_has_none(mini, monkeypatch):
    monkeypatch.setenv("HOME", str(mini.parent))  # no ~/.gitconfig
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_AUTHOR_NAME", raising=False)
    monkeypatch.delenv("GIT_AUTHOR_EMAIL", raising=False)
    repro(mini)
    rec = versions.record_run(mini, "r", versions.params_digest(mini), ROW)
    assert git(mini, "log", "-1", "--format=%an <%ae>") == "gan-pipeline <gan-pipeline@localhost>"
    assert rec.commit


def test_params_edited_during_the_run_stops_the_commit(mini):
    digest = versions.params_digest(mini)  # what the run read
    repro(mini)
    set_seed(mini, 7)  # someone edits the file before the run commits
    before = git(mini, "rev-parse", "HEAD")
    with pytest.raises(versions.CommitRefused, match="params.yaml was edited while the run was going"):
        versions.record_run(mini, "r", digest, ROW)
    assert git(mini, "rev-parse", "HEAD") == before
    assert (mini / "data/models/generator.pt").exists()  # nothing lost


def test_uncommitted_stage_code_stops_the_commit_then_the_next_run_commits(mini):
    (mini / "make.py").write_text(MAKE + "# tweak\n")
    repro(mini)
    before = git(mini, "rev-parse", "HEAD")
    with pytest.raises(versions.CommitRefused, match=r"uncommitted edits to files the stages depend on: make\.py"):
        versions.record_run(mini, "r", versions.params_digest(mini), ROW)
    assert git(mini, "rev-parse", "HEAD") == before
    git(mini, "-c", "user.name=u", "-c", "user.email=u@u", "commit", "-qam", "the user commits the code")
    # The next run has nothing to retrain; it commits what the refused one left, with the last recorded run.
    history = Paths(mini).history
    history.parent.mkdir(parents=True)
    history.write_text("metric,value,champion_value,promoted,flow_run_id,flow_run_name,stages_run\n"
                       "fid_classifier,10.0,,False,id-9,calm-fox,train\n")  # fmt: skip
    dvc(mini, "add", "data/history")
    rec = versions.record_run(mini, "later-run (id-10)", versions.params_digest(mini), None)
    assert "dvc.lock" in rec.files and "data/history.dvc" in rec.files
    message = git(mini, "log", "-1", "--format=%B")
    assert message.startswith("gan-pipeline: record the pipeline's files left uncommitted")
    assert "Committed by flow run later-run (id-10), which ran no stage." in message
    assert "Last recorded flow run: calm-fox (id-9): fid_classifier 10 (champion none), not promoted" in message


def test_a_pipeline_that_is_not_current_is_not_committed(mini):
    repro(mini)
    (mini / "data/models/generator.pt").write_bytes(b"changed under the run")
    with pytest.raises(versions.CommitRefused, match="not current any more"):
        versions.record_run(mini, "r", versions.params_digest(mini), ROW)


def test_a_merge_conflict_in_params_stops_the_commit(mini):
    ident = ["-c", "user.name=u", "-c", "user.email=u@u"]
    git(mini, "checkout", "-qb", "other")
    set_seed(mini, 3)
    git(mini, *ident, "commit", "-qam", "seed 3")
    git(mini, "checkout", "-q", "-")
    set_seed(mini, 4)
    git(mini, *ident, "commit", "-qam", "seed 4")
    assert run(["git", *ident, "merge", "other"], mini, check=False).returncode != 0  # conflict
    index = (mini / ".git/index").read_bytes()
    with pytest.raises(versions.CommitRefused, match="a git merge is in progress: finish or abort it"):
        versions.record_run(mini, "r", None, ROW)
    assert (mini / ".git/index").read_bytes() == index  # the user's merge is left exactly as it was
    git(mini, "merge", "--abort")
    # A conflict with no merge under way (`git stash pop` onto a changed file): the unmerged file is named.
    set_seed(mini, 5)
    git(mini, "stash", "-q")
    set_seed(mini, 6)
    git(mini, *ident, "commit", "-qam", "seed 6")
    assert run(["git", "stash", "pop"], mini, check=False).returncode != 0
    with pytest.raises(versions.CommitRefused, match="merge conflict in params.yaml"):
        versions.record_run(mini, "r", None, ROW)


def test_a_detached_head_is_not_committed_on(mini):
    repro(mini)
    versions.record_run(mini, "r1", versions.params_digest(mini), ROW)
    git(mini, "checkout", "-q", "--detach")
    set_seed(mini, 1)
    repro(mini)
    with pytest.raises(versions.CommitRefused, match=r"HEAD is detached .*: a commit here would be on no branch"):
        versions.record_run(mini, "r2", versions.params_digest(mini), ROW)


def test_a_tag_that_failed_is_made_by_the_next_run(mini):
    repro(mini)
    promote_champion(mini, 10.0, datetime(2026, 11, 27, 2, 0, 0, tzinfo=UTC))
    git(mini, "config", "tag.gpgSign", "true")  # a worker whose signing key is missing: `git tag` fails
    git(mini, "config", "gpg.program", "false")
    failed = r"(?s)committed \w+, but tagging its champion failed: git tag -a .* … \w+ failed .*next run tries"
    with pytest.raises(gitrepo.GitError, match=failed):
        versions.record_run(mini, "r1", versions.params_digest(mini), ROW)
    committed = git(mini, "rev-parse", "HEAD")
    assert "data/models/champion.dvc" in git(mini, "show", "--name-only", "--format=", "HEAD").split()
    assert gitrepo.champion_tags(mini) == []
    git(mini, "config", "tag.gpgSign", "false")
    rec = versions.record_run(mini, "r2", versions.params_digest(mini), None)  # nothing to commit
    assert rec.commit is None and rec.tag == "champion-20261127-020000"
    assert gitrepo.resolve(mini, "champion") == committed
    assert versions.record_run(mini, "r3", versions.params_digest(mini), None).tag is None  # once


def test_a_champion_whose_commit_was_refused_is_tagged_and_restored_as_itself(mini, tmp_path):
    """Run A promotes but cannot commit (params edited mid-run); run B retrains and is not promoted. B's commit
    carries A's champion: it gets the tag, and `restore champion` brings A's generator, not B's."""
    digest = versions.params_digest(mini)
    repro(mini)
    promote_champion(mini, 10.0, datetime(2026, 11, 27, 2, 0, 0, tzinfo=UTC))  # A: seed 0
    set_seed(mini, 1)
    with pytest.raises(versions.CommitRefused):
        versions.record_run(mini, "A", digest, ROW)
    repro(mini)  # B: seed 1, not promoted
    rec = versions.record_run(mini, "B", versions.params_digest(mini), {**ROW, "promoted": False, "flow_run_id": "B"})
    assert rec.tag == "champion-20261127-020000"
    message = git(mini, "log", "-1", "--format=%B")
    assert "not promoted" in message and "Carries the champion promoted by flow run run-1" in message
    done = restore(mini, "champion", tmp_path / "out")
    assert done.champion and (tmp_path / "out/generator.pt").read_bytes()[:1] == bytes([0])  # A's
    assert json.loads((tmp_path / "out/record.json").read_text())["flow_run_id"] == "run-1"
    # That commit's run (B) did not make the champion: its samples and settings are not passed off as A's.
    assert not (tmp_path / "out/samples").exists() and not (tmp_path / "out/params.yaml").exists()


def test_not_a_git_repository_commits_nothing_and_says_so(tmp_path):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    rec = versions.record_run(tmp_path, "r", None, ROW)
    assert rec.commit is None and "not a git repository" in rec.note


# ---- the push


def cloud_status(repo: Path) -> dict:
    return json.loads(dvc(repo, "status", "--cloud", "--json").stdout or "{}")


def test_push_then_a_broken_remote_fails_with_dvcs_reason_and_the_next_push_completes(mini, tmp_path):
    repro(mini)
    pushed = versions.push(mini)
    assert pushed.remote.name == "store" and "pushed" in pushed.message
    assert cloud_status(mini) == {}

    set_seed(mini, 5)
    repro(mini)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the remote's folder should be")
    dvc(mini, "remote", "modify", "store", "url", str(blocker / "remote"))
    with pytest.raises(versions.PushFailed) as err:
        versions.push(mini)
    text = str(err.value)
    assert "dvc push to remote 'store'" in text and "Not a directory" in text
    assert "the next run pushes what is missing" in text
    assert (mini / "data/models/generator.pt").read_bytes()[:1] == bytes([5])  # nothing lost locally

    dvc(mini, "remote", "modify", "store", "url", str(tmp_path / "remote"))
    assert cloud_status(mini)  # the new generator is missing from the remote
    versions.push(mini)
    assert cloud_status(mini) == {}


def test_a_push_killed_midway_leaves_the_remote_usable_and_the_next_push_completes_it(mini, tmp_path):
    repro(mini)  # a 300 kB generator and two small sample files
    versions.record_run(mini, "r", versions.params_digest(mini), ROW)
    # The kernel kills `dvc push` (SIGXFSZ) when it writes past 100 kB: midway through the generator's bytes.
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    killed = subprocess.run(["bash", "-c", f"ulimit -f 100 && exec {sys.executable} -m dvc push -j 1"],
                            cwd=mini, env=env, capture_output=True, text=True)  # fmt: skip
    assert killed.returncode != 0, killed.stdout + killed.stderr
    assert cloud_status(mini)  # not everything arrived
    pushed = versions.push(mini)
    assert "pushed" in pushed.message
    assert cloud_status(mini) == {}
    # And the remote serves it: a fresh clone gets the same bytes.
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(mini), str(clone)], tmp_path)
    dvc(clone, "pull")
    assert (clone / "data/models/generator.pt").read_bytes() == (mini / "data/models/generator.pt").read_bytes()


def test_without_a_remote_a_local_one_is_set_up_beside_the_repository(mini):
    dvc(mini, "remote", "default", "--unset")
    repro(mini)
    pushed = versions.push(mini)
    expected = str(mini.resolve().parent / "repo-dvc-remote")
    assert pushed.remote.created and pushed.remote.url == expected
    assert (mini / ".dvc/config.local").exists() and "store" in (mini / ".dvc/config").read_text()
    assert Path(expected, "files").is_dir() and cloud_status(mini) == {}
    assert not versions.ensure_remote(mini).created  # configured now


# ---- restore


def test_restore_brings_back_any_version_from_the_remote_without_touching_the_work_tree(mini, tmp_path):
    repro(mini)
    promote_champion(mini, 10.0, datetime(2026, 11, 27, 2, 0, 0, tzinfo=UTC))
    first = versions.record_run(mini, "r1", versions.params_digest(mini), ROW)
    versions.push(mini)
    set_seed(mini, 1)
    repro(mini)
    second = versions.record_run(mini, "r2", versions.params_digest(mini), {**ROW, "promoted": False})
    versions.push(mini)

    clone = tmp_path / "clone"  # another machine: no DVC cache, only the remote
    run(["git", "clone", "-q", str(mini), str(clone)], tmp_path)
    status_before = git(clone, "status", "--porcelain")
    done = restore(clone, "champion", tmp_path / "out-champion")
    assert done.commit == first.commit
    out = tmp_path / "out-champion"
    assert (out / "generator.pt").read_bytes()[:1] == bytes([0])
    assert json.loads((out / "metrics.json").read_text()) == {"fid_classifier": 10.0}
    assert done.champion and json.loads((out / "record.json").read_text())["flow_run_id"] == "run-1"
    # That commit's run made the champion: its samples and settings come too.
    assert (out / "samples/MODEL_CARD.md").read_text() == "card 0"
    assert yaml.safe_load((out / "params.yaml").read_text()) == {"train": {"seed": 0}}
    manifest = json.loads((out / "RESTORED.json").read_text())
    assert manifest["commit"] == first.commit and manifest["tags"] == [first.tag] and manifest["champion"]

    done = restore(clone, second.commit[:8], tmp_path / "out-second")
    assert not done.champion and (tmp_path / "out-second/generator.pt").read_bytes()[:1] == bytes([1])
    assert (tmp_path / "out-second/samples/MODEL_CARD.md").read_text() == "card 1"
    # At that commit the champion is still the first run's: it comes beside the run's files.
    assert json.loads((tmp_path / "out-second/champion/record.json").read_text())["flow_run_id"] == "run-1"
    assert (tmp_path / "out-second/champion/generator.pt").read_bytes()[:1] == bytes([0])
    assert git(clone, "status", "--porcelain") == status_before  # work tree untouched
    assert not (clone / "data/models/generator.pt").exists()


def test_a_clone_anywhere_restores_from_the_workspaces_remote_and_dvc_pull_reads_it_too(mini, tmp_path):
    # The project's own .dvc/config: a remote given relative to .dvc/, i.e. beside the workspace.
    (mini / ".dvc/config").write_text((REPO / ".dvc/config").read_text())
    git(mini, "-c", "user.name=u", "-c", "user.email=u@u", "commit", "-qam", "the project's remote")
    remote = tmp_path / "gan-pipeline-dvc-remote"
    repro(mini)
    promote_champion(mini, 10.0, datetime(2026, 11, 27, 2, 0, 0, tzinfo=UTC))
    versions.record_run(mini, "r1", versions.params_digest(mini), ROW)
    assert versions.push(mini).remote.url == str(remote) and (remote / "files").is_dir()

    clone = tmp_path / "a/b/c/clone"  # another depth: the relative URL names a/b/c/gan-pipeline-dvc-remote
    run(["git", "clone", "-q", str(mini), str(clone)], tmp_path)
    assert not (clone / ".dvc/cache").exists()  # its own, empty cache: the files can only come from the remote
    assert versions.default_remote(clone).url == str(tmp_path / "a/b/c/gan-pipeline-dvc-remote")
    shared = versions.shared_remote(clone)
    assert (shared.name, shared.url, shared.shared_from) == ("local", str(remote), str(mini.resolve()))
    out = tmp_path / "out"
    restore(clone, "champion", out)
    assert (out / "generator.pt").read_bytes() == (mini / "data/models/champion/generator.pt").read_bytes()
    # Recorded in the clone's own config (untracked): plain DVC commands there use the same remote.
    assert versions.default_remote(clone).url == str(remote) and git(clone, "status", "--porcelain") == ""
    dvc(clone, "pull")
    assert (clone / "data/models/generator.pt").read_bytes() == (mini / "data/models/generator.pt").read_bytes()
    assert not (tmp_path / "a/b/c/gan-pipeline-dvc-remote").exists()

    # A clone of that clone, elsewhere again, finds it through the chain; the flow's push from it goes there too.
    deeper = tmp_path / "x/clone2"
    run(["git", "clone", "-q", str(clone), str(deeper)], tmp_path)
    restore(deeper, "champion", tmp_path / "out2")
    assert (tmp_path / "out2/generator.pt").read_bytes() == (out / "generator.pt").read_bytes()
    assert versions.ensure_remote(deeper) == versions.Remote("local", str(remote))

    # A clone that names its own remote (.dvc/config.local) keeps it.
    mine = tmp_path / "m/clone3"
    run(["git", "clone", "-q", str(mini), str(mine)], tmp_path)
    dvc(mine, "remote", "add", "--local", "-d", "mine", str(tmp_path / "elsewhere"))
    assert versions.shared_remote(mine) == versions.Remote("mine", str(tmp_path / "elsewhere"))


def test_restore_errors_name_the_problem(mini, tmp_path):
    repro(mini)
    rec = versions.record_run(mini, "r1", versions.params_digest(mini), ROW)
    with pytest.raises(gitrepo.GitError, match="no champion tag yet"):
        restore(mini, "champion", tmp_path / "a")
    with pytest.raises(gitrepo.GitError, match="'nope' names no commit"):
        restore(mini, "nope", tmp_path / "a")
    (tmp_path / "full").mkdir()
    (tmp_path / "full/keep.txt").write_text("mine")
    with pytest.raises(RestoreError, match="exists and is not an empty folder"):
        restore(mini, rec.commit, tmp_path / "full")
    assert (tmp_path / "full/keep.txt").read_text() == "mine"
    # Never pushed, and another clone has no cache: the error says where to look.
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(mini), str(clone)], tmp_path)
    with pytest.raises(RestoreError, match="was that run pushed"):
        restore(clone, rec.commit, tmp_path / "b")
    assert not (tmp_path / "b").exists()  # nothing half-written


def test_dvc_diff_against_a_recorded_run(mini):
    from gan.lifecycle.rundiff import diff_against, markdown

    repro(mini)
    rec = versions.record_run(mini, "r1", versions.params_digest(mini), ROW)
    gitrepo.tag(mini, "champion-1", "m", rec.commit)
    set_seed(mini, 2)
    repro(mini)
    diff = diff_against(mini, "champion-1")
    assert diff.params == [("train.seed", 0, 2)]
    assert diff.metrics == [("fid_classifier", 10.0, 12.0, 2.0)]
    md = markdown(diff, first="fid_classifier")
    assert "| train.seed | 0 | 2 |" in md and "| fid_classifier | 10 | 12 | 2 |" in md


def test_describe_head_names_the_commit_and_uncommitted_stage_code(tmp_path):
    assert gitrepo.describe_head(tmp_path) == "unknown (not a git checkout)"
    run(["git", "init", "-q"], tmp_path)
    assert gitrepo.describe_head(tmp_path) == "unknown (not a git checkout)"  # no commit yet
    (tmp_path / "gan").mkdir()
    (tmp_path / "gan" / "x.py").write_text("a = 1\n")
    (tmp_path / "notes.txt").write_text("x")
    run(["git", "add", "-A"], tmp_path)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"], tmp_path)
    commit = run(["git", "rev-parse", "HEAD"], tmp_path).stdout.strip()
    assert gitrepo.describe_head(tmp_path) == commit
    (tmp_path / "notes.txt").write_text("y")  # not stage code
    assert gitrepo.describe_head(tmp_path) == commit
    (tmp_path / "gan" / "x.py").write_text("a = 2\n")
    assert gitrepo.describe_head(tmp_path) == f"{commit} (with uncommitted changes)"
