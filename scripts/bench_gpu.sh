#!/usr/bin/env bash
# One prepared GPU session (device time is scarce): correctness on CUDA first, then a real 50,000-sample
# F-PNDM-50 FID cell (one pass: sampling, PNG writing on background threads, features, FID) with its time split,
# and the FID with the feature network's TF32 off (the default) and on. Everything goes to OUT_DIR/bench_gpu.log.
#
#   scripts/bench_gpu.sh [OUT_DIR]            # on a machine with a CUDA GPU, from the repository root
#   DEVICE=cpu NUM=16 BATCH=8 PRECISION=fp32 COMPILE=0 PARTS=cell scripts/bench_gpu.sh /tmp/dry   # dry run
#
# The golden tests need ../shared/reference. Real weights cannot be fetched on a machine without internet, so
# the cell uses a random-weight checkpoint written in the released format (plain state dict, configs/cifar10.yml)
# and pytorch-fid's FID Inception with random weights written in the real file format
# (scripts/bench_fid_pass.py --write-inception), scored against N(0, I) statistics: it times the pipeline and
# measures the TF32 effect; its FID is no model's quality. Expected on an H200: ≈ 40 s compilation, ≈ 170 s of
# bf16 network time, features and FID well under a minute (docs/PERFORMANCE.md).
# One device command may run 10 minutes: run PARTS=tests and PARTS=cell as two commands if the first is slow.
# Knobs: PARTS (default "tests cell"; also: unet overhead compile), DEVICE (cuda), NUM (50000), BATCH (500, a
# divisor of NUM keeps one compiled shape), PRECISION (bf16), COMPILE (1), METHOD (F-PNDM), STEPS (50), PYTHON
# (default: the project's .venv, as the other scripts). The exit status is 1 when any part failed.
set -uo pipefail
. "$(dirname "$0")/_common.sh"
case "${1:-}" in -h|--help) pndm_usage "$0"; exit 0 ;; -*) echo "error: unknown option $1" >&2; exit 2 ;; esac
OUT_DIR=$(pndm_abs "${1:-gpu_out}")
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(pndm_python)}
failed=()
DEVICE=${DEVICE:-cuda}
NUM=${NUM:-50000}
BATCH=${BATCH:-500}
PRECISION=${PRECISION:-bf16}
COMPILE=${COMPILE:-1}
METHOD=${METHOD:-F-PNDM}
STEPS=${STEPS:-50}
PARTS=" ${PARTS:-tests cell} "
want() { [[ "$PARTS" == *" $1 "* ]]; }
export PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/bench_gpu.log"
exec > >(tee -a "$LOG") 2>&1
step() { echo; echo "=== $1 ($(date +%T))"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

step environment
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
$PY -c 'import torch, platform, os; print("torch", torch.__version__, "cuda", torch.version.cuda, "python",
platform.python_version(), "cpus", os.cpu_count(),
torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA")' \
    || { echo "error: $PY cannot import torch (set PYTHON)"; exit 1; }
echo "DEVICE=$DEVICE NUM=$NUM BATCH=$BATCH PRECISION=$PRECISION COMPILE=$COMPILE METHOD=$METHOD STEPS=$STEPS"

want tests && step "golden numbers and the FID feature network's TF32 policy on the device" && \
{ timeout 180 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -15 || failed+=(tests); }

if want cell; then
  WORK=$(mktemp -d)
  step "a $NUM-sample $METHOD-$STEPS FID cell, one pass ($PRECISION, compile=$COMPILE, batch $BATCH)"
  $PY - "$WORK/random_cifar10.ckpt" <<'EOF'
import sys
import torch
from models import build_model
from models.factory import known_model_configs
torch.manual_seed(0)
torch.save(build_model(known_model_configs()["cifar10"]).state_dict(), sys.argv[1])  # the release's plain format
print("random-weight CIFAR-10 checkpoint →", sys.argv[1])
EOF
  [ $? = 0 ] || failed+=(checkpoint)
  $PY scripts/bench_fid_pass.py --write-inception "$WORK/pt_inception_random.pth" || failed+=(inception)
  $PY scripts/bench_fid_pass.py --write-reference "$WORK/reference.npz" \
      --inception-weights "$WORK/pt_inception_random.pth" || failed+=(reference)
  extra=(--precision "$PRECISION")
  [ "$COMPILE" = 1 ] && extra+=(--compile)
  start=$(now_ms)
  # main.py sample --fid, in a process that also times the network alone (synchronized calls) and its first
  # call (start-up/compilation); main.py prints the split of the rest ("seconds: sampling …, features …, PNG …")
  timeout 590 $PY scripts/bench_fid_pass.py --timed-sample -- --config configs/cifar10.yml \
      --ckpt "$WORK/random_cifar10.ckpt" --device "$DEVICE" --method "$METHOD" --steps "$STEPS" \
      --num-samples "$NUM" --batch-size "$BATCH" "${extra[@]}" --out "$WORK/cell" --fid \
      --stats "$WORK/reference.npz" --inception-weights "$WORK/pt_inception_random.pth" 2>&1 \
      | tr '\r' '\n' | { grep -v "img/s\]$\|it/s\]$" || true; } | tail -12 || failed+=(cell)
  echo "wall time of the whole command, process start included: $(( $(now_ms) - start )) ms"
  echo "PNG files: $(find "$WORK/cell" -name '*.png' | wc -l); fid.json: $(cat "$WORK/cell/fid.json" 2>/dev/null \
      | tr -d '\n ')"

  step "FID of the cell with the feature network's TF32 off and on (PNGs read back)"
  timeout 300 $PY scripts/bench_fid_pass.py --tf32-compare "$WORK/cell" --stats "$WORK/reference.npz" \
      --inception-weights "$WORK/pt_inception_random.pth" --device "$DEVICE" 2>&1 | { grep -v "^\s*$" || true; } \
      || failed+=(tf32)
  rm -rf "$WORK"
fi

want unet && step "UNet throughput, batch $BATCH, fp32/bf16/fp16 eager fast paths" && \
{ timeout 150 $PY scripts/bench_unet.py --device "$DEVICE" --batch "$BATCH" --iters 20 --rounds 5 || failed+=(unet); }

want overhead && step "sampler overhead, batch $BATCH" && \
{ timeout 120 $PY scripts/bench_samplers.py --skip-accuracy --device "$DEVICE" --overhead-batch "$BATCH" \
    --overhead-steps 20 || failed+=(overhead); }

want compile && step "UNet throughput with torch.compile, batch $BATCH" && \
{ timeout 300 $PY scripts/bench_unet.py --device "$DEVICE" --batch "$BATCH" --iters 20 --rounds 5 \
    --precisions fp32,bf16 --compile || failed+=(compile); }
step done
echo "log: $LOG"
if [ ${#failed[@]} -gt 0 ]; then echo "error: failed: ${failed[*]}"; exit 1; fi
