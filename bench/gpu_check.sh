#!/usr/bin/env bash
# The GPU checks of the training parts, as one script for a lent GPU machine (run from the repository root).
#
#   tar -czf bench-output/gpu-carry.tgz data/prepared/{train,test}.npz data/prepared/summary.json \
#       data/models/classifier.pt data/reference/{meta.json,classifier.npz}      # here, after the pipeline ran
#   bash bench/gpu_check.sh                                                      # there; figures go to $OUT
#
# 1. the tests that need CUDA (the CUDA-graph step against eager, DiffAugment on CUDA, the step's parts);
# 2. `train.cuda_graph` for real (it had never run on a GPU): the default model trained eagerly and as a CUDA
#    graph, and a graph with the parts that can run in one (hinge, spectral norm, EMA, conditional), images/s;
# 3. a 4-trial sweep one trial at a time vs two at once on the GPU (bench/sweep_speed.py; needs prefect, dvc and
#    distributed installed there, e.g. as wheels in .whl).
set -uo pipefail
OUT=${OUT:-bench-output/gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then  # wheels the GPU machine lacks (pydantic etc.), carried from here
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | tail -1
    export PYTHONPATH=/tmp/site:$PWD
fi
[ -f bench-output/gpu-carry.tgz ] && tar -xzf bench-output/gpu-carry.tgz
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

echo "== 1. CUDA tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider --noconftest -W ignore \
    "tests/test_train.py::test_cuda_graph_step_replays_the_eager_update" tests/test_augment.py tests/test_step.py \
    2>&1 | tail -4 | tee "$OUT/tests.txt"

echo "== 2. train.cuda_graph for real (Fashion-MNIST, 2 epochs, batch 64)"
run_train() {  # name, overrides...
    local name=$1; shift
    local sets=()
    for kv in train.epochs=2 train.batch_size=64 train.device=cuda "$@"; do sets+=(--set "$kv"); done
    timeout 120 python3 -m gan train "${sets[@]}" > "$OUT/train-$name.log" 2>&1
    echo "$name rc=$? $(python3 -c "import json; s = json.load(open('data/train/summary.json')); \
print('steps', s['steps'], 'images/s', s['images_per_second'], 'final', {k: round(v, 3) for k, v in s['final'].items() \
if isinstance(v, float)})")" | tee -a "$OUT/cuda_graph.txt"
}
run_train eager train.cuda_graph=false
run_train graph train.cuda_graph=true
run_train graph-parts train.cuda_graph=true train.loss=hinge model.spectral_norm=true train.ema_decay=0.999 \
    model.conditional=true
run_train eager-parts train.cuda_graph=false train.loss=hinge model.spectral_norm=true train.ema_decay=0.999 \
    model.conditional=true

echo "== 3. a sweep on the GPU: one trial at a time vs two at once"
timeout 300 python3 bench/sweep_speed.py --layouts 1x8 2x4 2>&1 | tail -8 | tee "$OUT/sweep-speed.txt"
cp bench-output/sweep-speed.json "$OUT/" 2>/dev/null
exit 0
