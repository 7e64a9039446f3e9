"""Test-only: record which params keys each `python -m gan STAGE` reads.

On `PYTHONPATH` with `GAN_PARAMS_TRACE=FILE`, this wraps `gan.cli.load_params` so the stage
gets a read-through proxy of its `Params`; every key read is appended to FILE as one JSON
line `{"stage": ..., "key": "section.field"}`. Reading a whole section at once (`model_dump`,
`model_copy`, ...) records the section; the whole `Params` at once records "*".
tests/test_stage_deps.py checks the keys against each stage's `params` in dvc.yaml.
"""

from __future__ import annotations

import json
import os
import sys

_TRACE = os.environ.get("GAN_PARAMS_TRACE")


class _Traced:
    def __init__(self, obj, path: str, record):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_record", record)

    def __getattr__(self, name: str):
        obj, path = self._obj, self._path
        value = getattr(obj, name)
        if name in type(obj).model_fields:
            key = f"{path}.{name}" if path else name
            if hasattr(type(value), "model_fields"):
                return _Traced(value, key, self._record)
            self._record(key)
            return value
        self._record(path or "*")  # model_dump, model_copy, ...: everything in it is read
        return value


def _install() -> None:
    sys.path.insert(0, os.getcwd())  # what `python -m` puts first: the workspace's own `gan`, not an installed one
    import gan.cli

    real_load = gan.cli.load_params
    stage = next((a for a in sys.orig_argv[3:] if not a.startswith("-")), "?")

    def record(key: str) -> None:
        with open(_TRACE, "a") as f:
            f.write(json.dumps({"stage": stage, "key": key}) + "\n")

    def load_params(*args, **kwargs):
        return _Traced(real_load(*args, **kwargs), "", record)

    gan.cli.load_params = load_params


if _TRACE and sys.orig_argv[1:3] == ["-m", "gan"]:
    _install()
