"""Peak memory of export and evaluation at large sample counts.

    python bench/memory.py [--n 50000]

Each measurement runs in its own process (after a pipeline run: it needs
data/models, data/reference, data/prepared) and prints peak RSS next to the
RSS of the same process after imports and model loading (the baseline), so
the difference is what the n samples cost.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, n: int) -> None:
    import torch

    from gan.core.config import load_params
    from gan.core.paths import PATHS
    from gan.training.models import load_generator

    p = load_params()
    load_generator(PATHS.generator)
    torch.zeros(1)
    base = rss_mb()
    t0 = time.perf_counter()
    if kind == "export":
        from gan.outputs.export import export

        with tempfile.TemporaryDirectory() as out:
            cfg = p.export.model_copy(update={"n_npz": n, "n_png": 1000})
            export(cfg, p, PATHS.generator, PATHS.metrics, PATHS.prepared_summary,
                   PATHS.train_summary, out)  # fmt: skip
    else:
        from gan.evaluation.evaluate import evaluate
        from gan.evaluation.features import ExtractorFiles

        cfg = p.evaluate.model_copy(update={"n_samples": n})
        with tempfile.TemporaryDirectory() as out:
            evaluate(cfg, PATHS.generator, ExtractorFiles(PATHS.classifier, PATHS.judge, cfg.inception_weights),
                     PATHS.reference,
                     f"{out}/m.json", device="cpu")  # fmt: skip
    print(json.dumps({"kind": kind, "n": n, "baseline_mb": round(base), "peak_mb": round(rss_mb()),
                      "seconds": round(time.perf_counter() - t0, 1)}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--child", choices=["export", "evaluate"])
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.n)
    for kind in ("export", "evaluate"):
        out = subprocess.run([sys.executable, __file__, "--child", kind, "--n", str(args.n)], capture_output=True,
                             text=True, check=True).stdout.strip().splitlines()[-1]  # fmt: skip
        r = json.loads(out)
        note = " (evaluation uses n = min(n, real test images) = the reference size)" if kind == "evaluate" else ""
        print(f"{kind:8s} n={r['n']}: peak RSS {r['peak_mb']} MB, baseline {r['baseline_mb']} MB, "
              f"+{r['peak_mb'] - r['baseline_mb']} MB, {r['seconds']} s{note}")  # fmt: skip


if __name__ == "__main__":
    main()
