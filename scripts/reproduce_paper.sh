#!/usr/bin/env bash
# Usage: scripts/reproduce_paper.sh DATASET [OUTDIR] [main.py ablate options …]
#   The paper's FID table for configs/DATASET.yml (cifar10, celeba, lsun_church, lsun_bedroom, cifar10_iddpm):
#   DDIM, S-PNDM, F-PNDM and FON at 10, 20, 50, 100, 250 and 1000 steps, and PF, 50,000 samples per cell, FID
#   against the config's FID.stats, into OUTDIR (default runs/paper-DATASET): results.md, results.csv, plot.png.
#   Needs the released checkpoint (Model.ckpt), the statistics (FID.stats) and the Inception weights (see
#   README). Resumable: rerun the same command after an interruption. On several GPUs:
#     NPROC=8 scripts/reproduce_paper.sh cifar10
#   The released code's arithmetic instead of DDIM's indexing: add --convention official (its grids differ where
#   1000/steps is not whole, and 1000 steps are impossible there: drop them with --steps 10,20,50,100,250).
set -euo pipefail
source "$(dirname "$0")/_common.sh"
case "${1:-}" in -h|--help|"") pndm_usage "$0"; [ -n "${1:-}" ]; exit ;; esac
dataset=$1
shift
[ -f "$(dirname "$0")/../configs/$dataset.yml" ] || { echo "error: no config configs/$dataset.yml (see -h)" >&2; exit 2; }
out=runs/paper-$dataset
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then out=$1; shift; fi
pndm_run ablate --config "configs/$dataset.yml" --methods DDIM,S-PNDM,F-PNDM,FON,PF \
  --steps 10,20,50,100,250,1000 --num-samples 50000 --out "$(pndm_abs "$out")" "$@"
