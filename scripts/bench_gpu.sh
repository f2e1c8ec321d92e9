#!/usr/bin/env bash
# One prepared GPU session (device time is scarce): correctness on CUDA first, then the UNet and sampler timings,
# then an end-to-end `main.py sample` run of the CIFAR-10 config. Every result goes to OUT_DIR as text.
#
#   scripts/bench_gpu.sh [OUT_DIR]            # on a machine with a CUDA GPU, from the repository root
#
# The golden tests need ../shared/reference; the end-to-end run uses a random-weight checkpoint written in the
# released format (real weights cannot be fetched on a machine without internet), so it times, it does not score.
# Knobs: PARTS (default "tests unet overhead e2e compile"), DEVICE (cuda), BATCH (256), BIG_BATCH (1024),
# NUM (4096).
set -uo pipefail
OUT_DIR=${1:-gpu_out}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-256}
BIG_BATCH=${BIG_BATCH:-1024}
NUM=${NUM:-4096}
PARTS=" ${PARTS:-tests unet overhead e2e compile} "
want() { [[ "$PARTS" == *" $1 "* ]]; }
export PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"
step() { echo; echo "=== $1 ($(date +%T))"; }

step environment
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
  $PY -c 'import torch, platform; print("torch", torch.__version__, "cuda", torch.version.cuda,
"python", platform.python_version(), torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA")'
} 2>&1 | tee "$OUT_DIR/env.txt"

want tests && step "golden numbers on the device" && \
timeout 240 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -15 | tee "$OUT_DIR/test_cuda.txt"

want unet && step "UNet throughput, batch $BATCH, fp32/bf16/fp16 eager fast paths, both memory layouts" && \
timeout 150 $PY scripts/bench_unet.py --device "$DEVICE" --batch "$BATCH" --iters 20 --rounds 5 \
    --layouts channels_last,contiguous 2>&1 | tee "$OUT_DIR/unet_b$BATCH.txt"

want unet && step "UNet throughput, batch $BIG_BATCH" && \
timeout 150 $PY scripts/bench_unet.py --device "$DEVICE" --batch "$BIG_BATCH" --iters 5 --rounds 3 \
    2>&1 | tee "$OUT_DIR/unet_b$BIG_BATCH.txt"

want overhead && step "sampler overhead, batch $BATCH" && \
timeout 120 $PY scripts/bench_samplers.py --skip-accuracy --device "$DEVICE" --overhead-batch "$BATCH" \
    --overhead-steps 20 2>&1 | tee "$OUT_DIR/sampler_overhead.txt"

if want e2e; then
step "end to end: main.py sample, CIFAR-10 config, S-PNDM 50 steps, $NUM samples"
CKPT=$(mktemp -d)/random_cifar10.ckpt
$PY - "$CKPT" <<'EOF'
import sys
import torch
from models import build_model
from models.factory import known_model_configs
torch.manual_seed(0)
torch.save(build_model(known_model_configs()["cifar10"]).state_dict(), sys.argv[1])
EOF
for options in "--precision fp32" "--precision bf16" "--precision bf16 --compile"; do
  SAMPLES=$(mktemp -d)
  start=$(date +%s%N)
  # shellcheck disable=SC2086
  timeout 200 $PY main.py sample --config configs/cifar10.yml --ckpt "$CKPT" --device "$DEVICE" \
      --method S-PNDM --steps 50 --num-samples "$NUM" --batch-size "$BIG_BATCH" $options \
      --out "$SAMPLES" 2>&1 | tr '\r' '\n' | tail -2
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  echo "$options: $(find "$SAMPLES" -name '*.png' | wc -l) PNGs in $ms ms (process start included)"
done 2>&1 | tee "$OUT_DIR/end_to_end.txt"
fi

want compile && step "UNet throughput with torch.compile, batch $BATCH" && \
timeout 300 $PY scripts/bench_unet.py --device "$DEVICE" --batch "$BATCH" --iters 20 --rounds 5 \
    --precisions fp32,bf16 --compile 2>&1 | tee "$OUT_DIR/unet_b${BATCH}_compile.txt"
step done
