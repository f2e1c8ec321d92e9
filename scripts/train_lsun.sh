#!/usr/bin/env bash
# Usage: scripts/train_lsun.sh church|bedroom [WORKDIR] [main.py train options …]
#   Trains the LSUN 256×256 DDPM of configs/lsun_church.yml or configs/lsun_bedroom.yml into WORKDIR
#   (default runs/train-lsun_CATEGORY). Needs the `lmdb` package and the LSUN lmdb in Dataset.root.
#   NPROC=N trains with N torchrun processes; the config's batch_size is per process.
#   Extra options go to `main.py train` and run from the repository root, e.g.
#     NPROC=8 scripts/train_lsun.sh church runs/church --set Dataset.root=/data/lsun --set Train.batch_size=8
set -euo pipefail
source "$(dirname "$0")/_common.sh"
case "${1:-}" in -h|--help|"") pndm_usage "$0"; [ -n "${1:-}" ]; exit ;; esac
case "$1" in church|bedroom) category=$1; shift ;;
  *) echo "error: first argument must be church or bedroom, got '$1' (see -h)" >&2; exit 2 ;; esac
pndm_train "configs/lsun_$category.yml" "runs/train-lsun_$category" "$@"
