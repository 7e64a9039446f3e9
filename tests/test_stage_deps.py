"""`dvc repro` may only call a stage current when nothing it runs or reads has changed.

Each stage's `cmd` in dvc.yaml is `python -m gan STAGE`; `gan.core.codedeps` finds the package
files that command can run (its transitive imports inside `gan/`). dvc.yaml must list
exactly those as the stage's code deps, and the trainer's resume fingerprint must hash the
same files. The params a stage reads are recorded while the stages really run (the e2e
test, through tests/params_trace) and checked against the stage's `params` here.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from gan.core import codedeps
from gan.core.config import Params

from .conftest import PARAMS_TRACE_DIR, REPO

CMD = re.compile(r"^python -m gan (\w+)$")


def dvc_stages(dvc_yaml: Path = REPO / "dvc.yaml") -> dict[str, dict]:
    return yaml.safe_load(dvc_yaml.read_text())["stages"]


def cli_stage(dvc_name: str, stage: dict) -> str:
    m = CMD.match(stage["cmd"].strip())
    assert m, f"dvc.yaml stage {dvc_name!r}: cmd {stage['cmd']!r} is not `python -m gan STAGE`"
    return m.group(1)


def code_deps_problems(stages: dict[str, dict]) -> list[str]:
    problems = []
    for name, stage in stages.items():
        listed = {d for d in stage.get("deps", []) if isinstance(d, str) and d.startswith("gan/")}
        needed = set(codedeps.stage_code_deps(cli_stage(name, stage)))
        if listed != needed:
            problems.append(
                f"stage {name!r}: missing {sorted(needed - listed)}, not imported {sorted(listed - needed)}; "
                f"its gan/ deps should be exactly: {sorted(needed)} (`python -m gan.core.codedeps` prints them)"
            )
    return problems


def test_dvc_yaml_lists_exactly_the_code_each_stage_runs():
    problems = code_deps_problems(dvc_stages())
    assert not problems, "\n".join(problems)


def lock_problems(stages: dict[str, dict], lock: dict, root: Path = REPO) -> list[str]:
    """Where dvc.lock does not describe HEAD's code: a stage missing from it, a code file it does not record, or one
    whose recorded md5 is not the file's (DVC 3's `hash: md5` is the md5 of the file's bytes)."""
    locked = lock.get("stages", {})
    problems = []
    for name, stage in stages.items():
        code = sorted(d for d in stage.get("deps", []) if isinstance(d, str) and d.startswith("gan/"))
        if name not in locked:
            problems.append(f"stage {name!r} is not in dvc.lock")
            continue
        recorded = {d["path"]: d.get("md5") for d in locked[name].get("deps", [])}
        stale = [p for p in code if recorded.get(p) != hashlib.md5((root / p).read_bytes()).hexdigest()]
        gone = sorted(p for p in recorded if p.startswith("gan/") and p not in code)
        if stale or gone:
            problems.append(f"stage {name!r}: dvc.lock records other code than HEAD's (changed or new: {stale}; "
                            f"no longer a dep: {gone})")  # fmt: skip
    return problems


def test_dvc_lock_records_heads_code_so_the_published_metrics_are_heads():
    """main's dvc.lock (and so data/metrics/metrics.json and the figures taken from it) comes from a run of HEAD's
    code: every code file a stage runs has the md5 dvc.lock records for it."""
    problems = lock_problems(dvc_stages(), yaml.safe_load((REPO / "dvc.lock").read_text()))
    assert not problems, (
        "dvc.lock is not HEAD's: run `dvc repro` (or `./run.sh`), then commit dvc.lock, params.yaml and "
        "data/metrics/metrics.json with the code change\n" + "\n".join(problems)
    )


def test_a_stale_lock_is_caught(tmp_path):
    stages = dvc_stages()
    lock = {"stages": {name: {"deps": [{"path": p, "md5": hashlib.md5((REPO / p).read_bytes()).hexdigest()}
                                       for p in st["deps"] if isinstance(p, str) and p.startswith("gan/")]}
                       for name, st in stages.items()}}  # fmt: skip
    assert lock_problems(stages, lock) == []
    lock["stages"]["train"]["deps"][0]["md5"] = "0" * 32
    lock["stages"]["export"]["deps"].append({"path": "gan/train.py", "md5": "1" * 32})
    del lock["stages"]["source"]
    problems = lock_problems(stages, lock)
    assert len(problems) == 3
    assert any("'train'" in p and "changed or new: ['gan/" in p for p in problems)
    assert any("'export'" in p and "no longer a dep: ['gan/train.py']" in p for p in problems)
    assert "stage 'source' is not in dvc.lock" in problems


def test_a_missing_code_dep_is_caught(tmp_path):
    stages = dvc_stages()
    stages["evaluate"]["deps"] = [d for d in stages["evaluate"]["deps"] if d != "gan/evaluation/features.py"]
    stages["export"]["deps"].append("gan/data/download.py")
    problems = code_deps_problems(stages)
    assert len(problems) == 2
    assert "'evaluate': missing ['gan/evaluation/features.py']" in problems[0]
    assert "'export': missing [], not imported ['gan/data/download.py']" in problems[1]


def test_the_closure_follows_nested_imports_but_only_the_stages_own_cli_function():
    train = set(codedeps.stage_code_deps("train"))
    # train.py imports config.py, which imports datasets.py: transitive deps count.
    assert {
        "gan/training/train.py",
        "gan/core/splits.py",
        "gan/core/config.py",
        "gan/core/datasets.py",
        "gan/cli.py",
    } <= train
    # cli.py imports every stage's module, each inside its own stage function: those don't count.
    assert "gan/data/download.py" not in train and "gan/evaluation/evaluate.py" not in train
    export = codedeps.stage_code_deps("export")  # the model card's metric table comes from outputs, not evaluation
    assert "gan/outputs/metric_table.py" in export and "gan/evaluation/evaluate.py" not in export


def test_a_cli_helper_called_by_a_stage_brings_its_imports(tmp_path, monkeypatch):
    cli = tmp_path / "cli.py"
    cli.write_text(codedeps.CLI.read_text().replace(
        "def stage_train(p: Params) -> None:\n",
        "def _helper() -> None:\n    from gan.evaluation.metrics import kid  # noqa: F401\n\n\n"
        "def stage_train(p: Params) -> None:\n    _helper()\n",
    ))  # fmt: skip
    monkeypatch.setattr(codedeps, "CLI", cli)
    assert codedeps.PACKAGE_DIR / "evaluation" / "metrics.py" in codedeps.stage_code_files("train")
    assert codedeps.PACKAGE_DIR / "evaluation" / "metrics.py" not in codedeps.stage_code_files("prepare")


def test_resume_fingerprint_hashes_the_train_stage_code_the_cli_passes(monkeypatch, tiny_split):
    import numpy as np
    import torch  # noqa: F401  (gan.training.train imports it)

    from gan.training import train as train_mod

    images = np.load(tiny_split)["images"]
    p = Params()

    def fingerprint():
        return train_mod.run_fingerprint(p.model, p.train, images, codedeps.stage_code_sha256("train"))

    before = fingerprint()
    for path in codedeps.stage_code_files("train"):
        original = Path.read_bytes

        def edited(self, _target=path, _original=original):
            data = _original(self)
            return data + b"\n# edited\n" if self == _target else data

        monkeypatch.setattr(Path, "read_bytes", edited)
        assert fingerprint() != before, f"{path} not in the fingerprint"
        monkeypatch.setattr(Path, "read_bytes", original)


def test_the_train_stage_passes_its_code_digest_to_train(monkeypatch):
    import gan.cli
    import gan.training.train as train_mod
    from gan.core.config import Params

    seen = {}
    monkeypatch.setattr(train_mod, "train", lambda *args, **kwargs: seen.update(kwargs))
    p = Params(train={"eval_every": 0})  # no probe: nothing but the call is made
    gan.cli.stage_train(p)
    assert seen["code_sha256"] == codedeps.stage_code_sha256("train")


# --- params: what each stage reads (recorded by tests/params_trace while the stages run) ---

TRACE_DIR = PARAMS_TRACE_DIR


# Keys a stage reads that cannot change what it writes (declaring them would rerun it for nothing), and why.
NO_EFFECT_ON_OUTPUTS = {
    # Where and how patiently to fetch: a file is accepted only if its SHA-256 matches, so the bytes are the same.
    "download": {"data.mirrors", "data.connect_timeout", "data.read_timeout", "data.retries"},
    # How patiently to ask a URL source what it holds: the answer (its hash or ETag) is the same.
    "source": {"data.connect_timeout", "data.read_timeout", "data.retries"},
}


def declared_params(stage: dict) -> set[str]:
    keys: set[str] = set()
    for entry in stage.get("params", []):
        keys.update(entry if isinstance(entry, dict) else [entry])  # `- file.yaml: [keys]` or `- key`
    return keys


def covered(key: str, declared: set[str]) -> bool:
    """`evaluate.seed` is covered by `evaluate.seed` or `evaluate`; a whole section only by itself; `*` never."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in declared for i in range(1, len(parts) + 1))


def params_problems(trace: list[dict], stages: dict[str, dict]) -> list[str]:
    by_cli = {cli_stage(name, st): name for name, st in stages.items()}
    problems = []
    for stage in sorted({t["stage"] for t in trace}):
        name = by_cli[stage]
        declared = declared_params(stages[name])
        read = sorted({t["key"] for t in trace if t["stage"] == stage})
        missing = [k for k in read if not covered(k, declared) and k not in NO_EFFECT_ON_OUTPUTS.get(stage, ())]
        if missing:
            problems.append(f"stage {name!r} reads {missing} but dvc.yaml declares only {sorted(declared)}")
    return problems


def read_trace(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_params_check_catches_an_undeclared_read():
    stages = dvc_stages()
    trace = [{"stage": "evaluate", "key": "evaluate.seed"}, {"stage": "evaluate", "key": "data.dataset"},
             {"stage": "train", "key": "model"}, {"stage": "export", "key": "*"}]  # fmt: skip
    stages["evaluate"]["params"] = ["evaluate"]
    problems = params_problems(trace, stages)
    assert any("'evaluate' reads ['data.dataset']" in p for p in problems)
    assert any("'export' reads ['*']" in p for p in problems)
    assert not any(p.startswith("stage 'train'") for p in problems)


@pytest.mark.parametrize(("key", "declared", "ok"), [
    ("evaluate.seed", {"evaluate"}, True), ("evaluate.seed", {"evaluate.seed"}, True),
    ("evaluate", {"evaluate.seed"}, False), ("evaluate.seed", {"evaluate.n_samples"}, False),
    ("*", {"data", "model"}, False),
])  # fmt: skip
def test_covered(key, declared, ok):
    assert covered(key, declared) is ok


def test_the_tracer_records_fields_sections_and_whole_reads(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("trace_probe", TRACE_DIR / "sitecustomize.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # GAN_PARAMS_TRACE unset: defines the proxy, installs nothing
    seen: list[str] = []
    p = mod._Traced(Params(), "", seen.append)
    assert p.train.device == "auto" and p.evaluate.seed == 1234
    p.model.model_dump()
    p.model_dump()
    assert seen == ["train.device", "evaluate.seed", "model", "*"]
