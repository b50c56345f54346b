#!/usr/bin/env bash
# One device command of a detached GPU session: starts $SCRIPT (e.g. scripts/gpu_x2_student.sh) under setsid when
# given, then waits up to WAIT seconds (the first argument, default 570) for it to touch /tmp/x2.done, and copies the
# results to $OUT (the device tool's folder): summary.txt, studies.json, the logs as logs.tgz and, when the session
# built them afresh, the extensions as prebuilt.tgz (carry it back as .devdata/prebuilt/prebuilt.tgz to skip the next
# build; gsplat's, when it compiled itself, as gsplat_cuda.so.gz, for .devdata/prebuilt/ likewise). A later command
# without SCRIPT only polls, while the machine is still warm (one with SCRIPT on a warm machine whose session has
# finished starts a new session):
#   SCRIPT=scripts/gpu_x2_student.sh bash scripts/gpu_poll.sh 570; then bash scripts/gpu_poll.sh 575; ...
set -u
WAIT=${1:-570}
OUT=${OUT:?run this through the device tool, which sets OUT}
if [ -n "${SCRIPT:-}" ]; then
  [ -f "$SCRIPT" ] || { echo "gpu_poll.sh: no such session script: $SCRIPT"; exit 2; }
  if [ -f /tmp/x2.started ] && [ -f /tmp/x2.done ]; then  # (a warm machine whose last session ended: a new one)
    echo "gpu_poll.sh: the earlier session on this machine had finished; starting $SCRIPT afresh"
    rm -rf /tmp/x2.started /tmp/x2.done /tmp/res
  fi
  if [ -f /tmp/x2.started ]; then echo "gpu_poll.sh: a session is already running on this machine; polling it"
  else
    touch /tmp/x2.started; mkdir -p /tmp/res
    setsid nohup bash "$SCRIPT" > /tmp/res/driver.txt 2>&1 < /dev/null &
  fi
elif [ ! -f /tmp/x2.started ]; then
  echo "gpu_poll.sh: no session on this machine (a fresh one: the earlier machine went back); give SCRIPT to start one"
  exit 2
fi
t0=$(date +%s)
while [ ! -f /tmp/x2.done ] && [ $(( $(date +%s) - t0 )) -lt "$WAIT" ]; do sleep 5; done
cp /tmp/res/summary.txt /tmp/res/studies.json "$OUT"/ 2>/dev/null
tar czf "$OUT"/logs.tgz -C /tmp/res logs driver.txt 2>/dev/null
[ -f /tmp/prebuilt.tgz ] && cp /tmp/prebuilt.tgz "$OUT"/
# gsplat's first-use compile, when a plan ran it: carry it back as .devdata/prebuilt/gsplat_cuda.so.gz (it skips that)
if [ ! -f .devdata/prebuilt/gsplat_cuda.so.gz ]; then
  so=$(find ~/.cache/torch_extensions /tmp/site -name 'gsplat_cuda*.so' 2>/dev/null | head -1)
  [ -n "$so" ] && gzip -c "$so" > "$OUT"/gsplat_cuda.so.gz
fi
if [ -f /tmp/x2.done ]; then echo FINISHED; else echo "STILL RUNNING after ${WAIT}s"; fi
tail -${TAIL:-25} /tmp/res/summary.txt 2>/dev/null  # (short: the next poll must follow within 30 s)
