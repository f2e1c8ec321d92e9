#!/usr/bin/env bash
# Usage: scripts/train_cifar10.sh [WORKDIR] [main.py train options …]
#   Trains the CIFAR-10 DDPM of configs/cifar10.yml into WORKDIR (default runs/train-cifar10).
#   NPROC=N trains with N torchrun processes; the config's batch_size is per process.
#   Extra options go to `main.py train` and run from the repository root, e.g.
#     scripts/train_cifar10.sh runs/c10 --max-steps 800000 --set Dataset.root=/data/cifar10
#     NPROC=4 scripts/train_cifar10.sh runs/c10 --resume
set -euo pipefail
source "$(dirname "$0")/_common.sh"
case "${1:-}" in -h|--help) pndm_usage "$0"; exit 0 ;; esac
pndm_train configs/cifar10.yml runs/train-cifar10 "$@"
