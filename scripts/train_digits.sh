#!/usr/bin/env bash
# Usage: scripts/train_digits.sh [WORKDIR] [main.py train options …]
#   Trains the CPU demo DDPM of configs/digits.yml (scikit-learn's 8×8 digits, 6,000 steps, about 7 minutes on
#   a laptop) into WORKDIR (default runs/train-digits). The EMA weights end up in WORKDIR/checkpoints/ema.pt;
#   copy them to models/weights/digits_ddpm_ema.pt to make them the config's Model.ckpt.
#   Runs on the CPU (the committed weights' device) unless DEVICE=cuda; NPROC=N trains with N torchrun
#   processes, and the config's batch_size is per process.
#   Extra options go to `main.py train` and run from the repository root, e.g.
#     scripts/train_digits.sh runs/digits --max-steps 500
#     scripts/train_digits.sh runs/digits --resume
set -euo pipefail
source "$(dirname "$0")/_common.sh"
case "${1:-}" in -h|--help) pndm_usage "$0"; exit 0 ;; esac
DEVICE=${DEVICE:-cpu}
pndm_train configs/digits.yml runs/train-digits "$@"
