# Shared by the shell entry points (sourced, not run).

# pndm_usage SCRIPT: print the script's header comment (its usage).
pndm_usage() { sed -n '2,/^set /{/^set /d;s/^# \{0,1\}//;p}' "$1"; }

# pndm_python: the interpreter, from the repository root: the project's venv when there is one, else python.
pndm_python() { if [ -x .venv/bin/python ]; then echo .venv/bin/python; else echo python; fi; }

# pndm_run SUBCOMMAND ARGS…: main.py from the repository root with the project's venv, under torchrun when
# NPROC > 1, with --device "$DEVICE" when DEVICE is set (a later --device in ARGS wins).
pndm_run() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  local py
  py=$(pndm_python)
  local launch=("$py")
  case "${NPROC:-1}" in
    *[!0-9]* | 0*) echo "error: NPROC must be a positive whole number of processes, got '${NPROC}'" >&2; exit 2 ;;
  esac
  [ "${NPROC:-1}" -gt 1 ] && launch=("$py" -m torch.distributed.run --standalone --nproc_per_node="$NPROC")
  local sub=$1
  shift
  exec "${launch[@]}" main.py "$sub" ${DEVICE:+--device "$DEVICE"} "$@"
}

# pndm_abs PATH: PATH made absolute against the caller's working directory (before pndm_run changes it).
pndm_abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

# pndm_train CONFIG DEFAULT_WORKDIR [WORKDIR] [main.py train options…]
pndm_train() {
  local config=$1 workdir=$2
  shift 2
  if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then workdir=$1; shift; fi
  pndm_run train --config "$config" --workdir "$(pndm_abs "$workdir")" "$@"
}
