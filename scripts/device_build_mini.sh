#!/usr/bin/env bash
# Build the shipped mini world (`--size large`) on one GPU, as it was built for the repo:
#   bash scripts/device_build_mini.sh WORKDIR [RESULTDIR]
# Independent stages run as parallel processes on one --out (the build's resume markers make
# that safe, and the stage split changes no output): vae | clip | classifier, then reference +
# samples, then onestep | proxy | aesthetic, then the manifest. Each phase has a time limit;
# whatever finished is kept, and a rerun of the same command resumes at the first missing stage.
# SIZE=reduced DEVICE=cpu runs the same phases at test size. RESULTDIR gets the log and the built folder as tar pieces of < 16 MB (split, not compressed:
# fp16 safetensors do not compress); reassemble with `cat mini.tar.* | tar -x -C DIR`.
set -u
W=${1:?usage: device_build_mini.sh WORKDIR [RESULTDIR]}
R=${2:-}
PY=${PYTHON:-python3}
B="$PY -m distar lab build mini --out $W --seed 0 --size ${SIZE:-large} --device ${DEVICE:-cuda}"
LOG=${R:-$W}/build.log
mkdir -p "$W" "$(dirname "$LOG")"
t0=$(date +%s)
phase() {  # phase LIMIT_S STAGE...: the stages in parallel, each under LIMIT_S
  local limit=$1; shift
  echo "== phase $* (limit ${limit}s) at +$(( $(date +%s) - t0 ))s" | tee -a "$LOG"
  local pids=()
  for s in "$@"; do timeout "$limit" $B --stages "$s" >>"$LOG" 2>&1 & pids+=($!); done
  local rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  echo "== phase $* done rc=$rc at +$(( $(date +%s) - t0 ))s" | tee -a "$LOG"
  return $rc
}
snap() {  # the build folder so far, as tar pieces in RESULTDIR (a later phase may be cut off)
  [ -n "$R" ] || return 0
  rm -f "$R"/mini.tar.*; tar -C "$W" -cf - . | split -b 15m - "$R/mini.tar."
}
# The classifier trains on the CPU (torch threads): on a shared GPU box it ran as a last phase
# on another machine (CPU_PHASE=0 here, then the same command there without CPU_PHASE).
phase 130 vae clip && snap && phase 180 reference,samples && snap \
  && phase 95 onestep proxy aesthetic && snap \
  && { [ "${CPU_PHASE:-1}" = 0 ] || { phase 400 classifier && timeout 60 $B >>"$LOG" 2>&1 && snap; }; }
rc=$?
echo "== build rc=$rc at +$(( $(date +%s) - t0 ))s" | tee -a "$LOG"
[ -n "$R" ] && ls -la "$R" | tee -a "$LOG"
exit $rc
