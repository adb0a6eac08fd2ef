#!/usr/bin/env bash
# lnpath's GPU benchmarks in one prepared run (issue 18: 0.5 s per demo biopsy on an H200 is the
# goal), for a machine with an NVIDIA GPU and lnpath installed with a CUDA build of torch:
#
#   bash scripts/bench_gpu.sh [OUT_DIR]        # default .cache/gpu
#
# Writes, each as its benchmark prints it: versions.txt (GPU, driver, torch), segment.json
# (scripts/bench_segment.py --device cuda: the bare forward pass, segmentation with and without
# flips, agreement with the CPU's outlines), score_slide.json (scripts/bench_score_slide.py
# --device cuda: the whole pipeline per stage, demo and 4x slide) and batch.json
# (scripts/bench_batch.py --device cuda: one worker per GPU against one process). About 5
# minutes on one GPU. Quote the medians with the GPU named (README, model card).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-.cache/gpu}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python}
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
    nproc
} > "$out/versions.txt"
"$python" scripts/bench_segment.py --device cuda --repeats 5 > "$out/segment.json"
"$python" scripts/bench_score_slide.py --device cuda --repeats 3 > "$out/score_slide.json"
"$python" scripts/bench_batch.py --device cuda --slides 4 --repeats 2 > "$out/batch.json"
echo "GPU benchmarks written to $out" >&2
