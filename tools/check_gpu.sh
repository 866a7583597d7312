#!/usr/bin/env bash
# The GPU check: the CUDA test tier, then the GPU rows of the benchmarks, into one figures folder.
#
#   tools/check_gpu.sh [FIGURES_DIR]        (default: gpu_figures/<UTC date-time>)
#
# Sized to finish within 10 minutes on one H100: each step has its own time limit (below), and a
# step that fails or runs out of time is recorded in the summary and the next one still runs.
# Writes FIGURES_DIR/figures.md (the summary, with the GPU's name) and each step's output:
#   tier.txt      pytest -m cuda (tests/cuda)                    limit 150 s
#   maskcut.txt   MaskCut ViT-B/8 images/s (random weights)       limit 150 s
#                 (and its CPU dense-eigh check of every cut)
#   sam.json      SAM ViT-H images/s (random weights)             limit 120 s
#   model.json    Mask2Former R50 train step at 512² and 1024²     limit 120 s
#   motion.json   RAFT-small flow frames/s at 854x480 (random)    limit  45 s
# Use the project's virtual environment (PYTHON, default .venv/bin/python).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-gpu_figures/$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
SUMMARY="$OUT/figures.md"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "CUDA not available (torch.cuda.is_available() is false); nothing to check" >&2
    exit 2
fi
{
    echo "# GPU figures ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
    echo
    "$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"- device: {p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__}, CUDA {torch.version.cuda}")'
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo
} > "$SUMMARY"
STATUS=0

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, record its exit status
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@"
    local rc=$?
    local took=$((SECONDS - start))
    if [ $rc -eq 0 ]; then
        echo "- $name: ok (${took} s)" >> "$SUMMARY"
    else
        [ $rc -eq 124 ] && why="out of time (${limit} s)" || why="exit status $rc"
        echo "- $name: FAILED, $why after ${took} s" >> "$SUMMARY"
        STATUS=1
    fi
}

step "CUDA test tier (pytest -m cuda)" 150 \
    "$PY" -m pytest tests/cuda -m cuda -q -p no:cacheprovider -rs > "$OUT/tier.txt" 2>&1
grep -E "passed|failed|skipped|error" "$OUT/tier.txt" | tail -1 | sed 's/^/  - /' >> "$SUMMARY"

step "MaskCut ViT-B/8, 480², N=3, no CRF, 3 photos" 150 \
    "$PY" tools/benchmark_maskcut.py --device cuda --backbones dino_vitb8 --skip-reference > "$OUT/maskcut.txt" 2>&1

step "SAM ViT-H, random weights, 32x32 points, 3 photos" 120 \
    "$PY" tools/benchmark_sam.py --device cuda --sam-type vit_h --json "$OUT/sam.json" > "$OUT/sam.txt" 2>&1

step "Mask2Former R50 panoptic train step, batch 2, 512² and 1024², float32" 120 \
    "$PY" tools/benchmark_model.py --device cuda --impls ours --sizes 512 1024 --steps 5 --repeats 1 \
    --output "$OUT/model.json" > "$OUT/model.txt" 2>&1

step "motion: RAFT-small flow, 854x480, 12 updates, forward + backward flow per frame" 45 \
    "$PY" - "$OUT/motion.json" > "$OUT/motion.txt" 2>&1 <<'PYEOF'
import json, sys, time
import numpy as np
import torch
from seg_suite.pseudo.motion.flow import RAFTFlow

flow = RAFTFlow("raft_small", device="cuda", random_init=True)
rng = np.random.default_rng(0)
frames = [rng.integers(0, 255, (480, 854, 3), dtype=np.uint8) for _ in range(11)]
flow(frames[0], frames[1])  # warm-up
torch.cuda.synchronize()
t = time.perf_counter()
for a, b in zip(frames[:-1], frames[1:]):
    flow(a, b)
    flow(b, a)
torch.cuda.synchronize()
fps = (len(frames) - 1) / (time.perf_counter() - t)
result = {"raft_small_frames_per_s": round(fps, 2), "size": [480, 854], "flows_per_frame": 2,
          "peak_cuda_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
json.dump(result, open(sys.argv[1], "w"))
print(json.dumps(result))
PYEOF

{
    echo
    echo "## Figures"
    echo
    echo '### MaskCut'
    grep -E "^\| (backbone|dino)" "$OUT/maskcut.txt" 2>/dev/null | head -3
    echo
    echo '### SAM, model, motion'
    for f in sam model motion; do
        [ -s "$OUT/$f.json" ] && { echo "- $f: \`$(tr -d '\n' < "$OUT/$f.json" | cut -c1-1500)\`"; }
    done
} >> "$SUMMARY"
cat "$SUMMARY"
exit $STATUS
