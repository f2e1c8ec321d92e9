#!/usr/bin/env bash
# Usage: scripts/train_celeba.sh [WORKDIR] [main.py train options …]
#   Trains the CelebA 64×64 DDPM of configs/celeba.yml into WORKDIR (default runs/train-celeba).
#   NPROC=N trains with N torchrun processes; the config's batch_size is per process.
#   Extra options go to `main.py train` and run from the repository root, e.g.
#     scripts/train_celeba.sh runs/celeba --set Dataset.root=/data/celeba
#     NPROC=4 scripts/train_celeba.sh runs/celeba --resume
set -euo pipefail
source "$(dirname "$0")/_common.sh"
case "${1:-}" in -h|--help) pndm_usage "$0"; exit 0 ;; esac
pndm_train configs/celeba.yml runs/train-celeba "$@"
