#!/usr/bin/env bash
# Usage: scripts/fid_stats.sh DATASET [OUT.npz] [main.py stats options …]
#   Reference FID statistics (mu, sigma of the config's feature network) of the training split of
#   configs/DATASET.yml — cifar10, celeba, lsun_church, lsun_bedroom, digits — written to OUT.npz (default: the
#   config's FID.stats path). Compatible with pytorch-fid and the released fid_stats_*.npz files. Examples:
#     scripts/fid_stats.sh cifar10 --set Dataset.root=/data/cifar10
#     scripts/fid_stats.sh cifar10 my_stats.npz --source /data/cifar10_train_png   # from an image folder
set -euo pipefail
source "$(dirname "$0")/_common.sh"
case "${1:-}" in -h|--help|"") pndm_usage "$0"; [ -n "${1:-}" ]; exit ;; esac
config="configs/$1.yml"
shift
[ -f "$(dirname "$0")/../$config" ] || { echo "error: no config $config (see -h)" >&2; exit 2; }
out=
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then out=$(pndm_abs "$1"); shift; fi
if [ -z "$out" ]; then
  # the config's FID.stats, read with the interpreter pndm_run will use; a failure shows its own error
  out=$(cd "$(dirname "$0")/.." && "$(pndm_python)" -c "from runners.config import load_config, get
print(get(load_config('$config'), 'FID', 'stats') or '')")
  [ -n "$out" ] || { echo "error: $config has no FID.stats; give OUT.npz" >&2; exit 2; }
fi
pndm_run stats --config "$config" --out "$out" "$@"
