#!/usr/bin/env bash
# The GPU figures of docs/BENCHMARKS.md, measured in one lease of the device tool.
#
# Before the lease, in the repository's root (both folders are git-ignored there):
#   .whl/     wheels the device image lacks, for Python 3.12 (see the device README):
#             zarr numcodecs donfig google-crc32c dask toolz partd locket
#             openslide-python openslide-bin
#   .gpu/wsi/ ../shared/data/wsi's two slides (../shared does not travel)
# then:  run(command="bash docs/scripts/gpu_checks.sh", carry=[".whl", ".gpu"], timeout_s=600)
#
# Each step has its own time limit and all of them a budget (BUDGET seconds, default
# 540), so a slow step costs only itself; the logs and JSONs come back in one archive,
# $OUT/results.tgz, remade after every step. DEV=cpu QUICK=1 runs the same steps small
# on a CPU (NO_WHEELS=1 where the packages are installed), to check the script first.
set -u
OUT=${OUT:-/tmp/gpu_checks_out}
DEV=${DEV:-cuda}
QUICK=${QUICK:-0}
BUDGET=${BUDGET:-540}
WORK=${WORK:-/tmp}
RES=$WORK/gpu_results
mkdir -p "$OUT" "$RES"
begin=$SECONDS

step() { # step NAME LIMIT COMMAND...: log to $RES/NAME.log, at most LIMIT s and the budget left
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - (SECONDS - begin)))
    ((left < limit)) && limit=$left
    if ((limit < 15)); then
        echo "$name: skipped, budget spent" | tee -a "$RES/steps.txt"
        return
    fi
    local t0=$SECONDS
    timeout "$limit" "$@" >"$RES/$name.log" 2>&1
    local rc=$?
    echo "$name: rc $rc, $((SECONDS - t0)) s (limit $limit s)" | tee -a "$RES/steps.txt"
    tail -n 4 "$RES/$name.log"
    tar -czf "$OUT/results.tgz" -C "$RES" .
}

if [ "${NO_WHEELS:-0}" != 1 ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD/src:$PWD
else
    export PYTHONPATH=$PWD/src:$PWD
fi
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
WSOL=("$PY" -m wsol.cli)
SLIDES=${SLIDES:-.gpu/wsi}
BG=$SLIDES/cmu-1-small-region.svs
LESION=$SLIDES/tcga-cr-7395-01a-01-ts1.svs

{
    nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
    "$PY" -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, \
'cuda', torch.cuda.is_available())"
    nproc
} >"$RES/env.txt" 2>&1
cat "$RES/env.txt"

if [ "$QUICK" = 1 ]; then
    EPOCHS=(1 1 1) REFIT=5 REGIONS=1 REPEATS=1 STEPS_MORE=60 TILES=16
    CAMS=(--repeats 1 --batch 2 --size 64)
else
    EPOCHS=(12 8 8) REFIT=300 REGIONS=12 REPEATS=1 STEPS_MORE=200 TILES=96
    CAMS=()
fi

# 1. The tests that need CUDA (skipped in CI), while the two benchmarks are cut.
"${WSOL[@]}" make-benchmark "$WORK"/bench1 --background "$BG" --lesion "$LESION" >"$RES/make128.log" 2>&1 &
make128=$!
"${WSOL[@]}" make-benchmark "$WORK"/b256 --size 256 --downsample 1 --background "$BG" --lesion "$LESION" \
    >"$RES/make256.log" 2>&1 &
make256=$!
step pytest_cuda 120 "$PY" -m pytest -q -p no:cacheprovider -k cuda \
    tests/test_train.py tests/test_infer.py tests/test_precision.py
wait $make128 $make256
tail -n 2 "$RES/make128.log" "$RES/make256.log"

# 2. Throughput: the CAM family on batches in memory, and the slide pipeline.
for bb in resnet18 resnet50; do
    step "cams_$bb" 90 "${WSOL[@]}" bench cams --device "$DEV" --backbone "$bb" --no-reference \
        "${CAMS[@]}" --json "$RES/cams_$bb.json"
    step "slide_$bb" 90 "${WSOL[@]}" bench slide sample_data/CMU-1-Small-Region.svs --device "$DEV" \
        --backbone "$bb" --tiles "$TILES" --workers 4 --json "$RES/slide_$bb.json"
done

# 3. The seed-1 resnet18 recipe (the one that misses +10 on a CPU), trained here, then
#    the simulated user: the app's round (40 steps, 4.5 s), then up to STEPS_MORE steps.
step quality_r18_s1 240 "${WSOL[@]}" bench quality "$WORK"/bench1 --pixel-tap -3 --epochs "${EPOCHS[@]}" \
    --fcam-seeds pixelcam --pixelcam-refit "$REFIT" --seed 1 --device "$DEV" \
    --checkpoint "$WORK"/q18s1g.safetensors --json "$RES/quality_r18_s1.json"
# The checkpoint comes back in 15 MB parts (the tool returns files of 16 MB at most), so
# that the same model's rounds can be run on a CPU too: cat q18s1g.part-* > q18s1g.safetensors
[ -f "$WORK"/q18s1g.safetensors ] && split -b 15M "$WORK"/q18s1g.safetensors "$OUT/q18s1g.part-"
step corrections_40 120 "${WSOL[@]}" bench corrections "$WORK"/bench1 --checkpoint "$WORK"/q18s1g.safetensors \
    --regions "$REGIONS" --repeats "$REPEATS" --device "$DEV" --json "$RES/corrections_40.json"
step corrections_more 180 "${WSOL[@]}" bench corrections "$WORK"/bench1 \
    --checkpoint "$WORK"/q18s1g.safetensors --regions "$REGIONS" --repeats "$REPEATS" \
    --steps "$STEPS_MORE" --device "$DEV" --json "$RES/corrections_more.json"

# 4. The resnet50 run at larger tiles: 256 px at 0.5 um/px (the 128-px tiles
#    are 1 um/px; at 256 px and 1 um/px the sample slide has too little tissue).
step quality_r50_256 300 "${WSOL[@]}" bench quality "$WORK"/b256 --backbone resnet50 --size 256 \
    --pixel-tap -3 --epochs "${EPOCHS[@]}" --fcam-seeds pixelcam --pixelcam-refit "$REFIT" \
    --seed 0 --device "$DEV" --json "$RES/quality_r50_256.json"

# 5. What the GPU round can learn at most: the whole truth painted every round.
step paint_all_more 150 "$PY" docs/scripts/corrections_variants.py "$WORK"/bench1 \
    "$WORK"/q18s1g.safetensors --regions "$REGIONS" --steps "$STEPS_MORE" --precision auto \
    --device "$DEV" paint-all

echo "all steps: $((SECONDS - begin)) s" | tee -a "$RES/steps.txt"
tar -czf "$OUT/results.tgz" -C "$RES" .
