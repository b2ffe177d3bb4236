#!/usr/bin/env bash
# A study part on a lent GPU, in calls that each bring back what the part has written so far.
#
#   device.sh start DIR COMMIT SECONDS SCRIPT TOML [ARGS...]
#       install the wheels in ./.whl (if any) into /tmp/site, start `python3 SCRIPT TOML --out DIR ARGS`
#       in a session of its own (it outlives the call; its log is DIR/study.out), then poll SECONDS
#   device.sh poll DIR SECONDS
#       wait until the part ends or SECONDS pass, then copy DIR/study.out and DIR/results.tgz to $OUT
#
# Why: the lent machine is given back 30 s after a call returns, and nothing on it survives that. A part
# whose results wait for a later call is lost when that call comes late (2026-12-02: part 3 finished,
# then its results went with the machine). So every call ends with the results so far, and a poll
# returns as soon as the part ends. results.tgz holds DIR/results/ and every round's record, config,
# manifest and train log; never checkpoints (they are not results, and $OUT takes 16 MiB a file).
#
# Each call through the device tool: kind nvidia-h200, timeout_s 600, carry [".whl", ".data"] (the
# wheels of the commit you run, and the data). Start, then poll at once for as long as it says "still
# running", with SECONDS of at most 300: on 2026-12-03 two CIFAR-10 attempts were lost when the call
# after a 560-s one came too late, while a part polled in calls of 240-300 s came back whole. A short
# call costs one more call, a lost machine the whole part. After each call, unpack here what came back:
#   mkdir -p DIR && tar xzf /work/.device/N/results.tgz -C DIR     (N: the call's files_at)
set -u -o pipefail

die() { echo "device.sh: $*" >&2; exit 2; }

poll() {
  local dir=$1 seconds=$2 t0=$SECONDS
  [[ $seconds =~ ^[0-9]+$ ]] || die "SECONDS must be a whole number of seconds, not '$seconds'"
  [[ -f $dir/pid ]] || die "no part was started in $dir: run 'device.sh start $dir ...' first"
  [[ -n ${OUT:-} && -d $OUT ]] || die "\$OUT is not a folder: run this through the device tool's run"
  while [[ ! -f $dir/rc ]] && (( SECONDS - t0 < seconds )); do sleep 1; done
  cp "$dir/study.out" "$OUT/" 2>/dev/null
  (cd "$dir" && { [[ -d results ]] && find results -type f ! -name '*.pt' ! -name '*.safetensors'
                  find . -path ./results -prune -o -type f \( -name record.json -o -name config.json \
                       -o -name manifest.json -o -name train_log.jsonl \) -print; } |
               tar czf "$OUT/results.tgz" -T -) || echo "device.sh: packing $dir failed; study.out came back"
  local size
  size=$(stat -c %s "$OUT/results.tgz" 2>/dev/null || echo 0)
  (( size > 16 * 1024 * 1024 )) && echo "device.sh: results.tgz is $size bytes, over \$OUT's 16 MiB a file"
  tail -n 8 "$dir/study.out" 2>/dev/null
  if [[ -f $dir/rc ]]; then
    local rc
    rc=$(cat "$dir/rc")
    echo "device.sh: the part ended (exit $rc) after $(( $(date +%s) - $(cat "$dir/started") )) s; results.tgz has what it wrote"
    return "$rc"
  fi
  echo "device.sh: still running after $(( $(date +%s) - $(cat "$dir/started") )) s: call 'device.sh poll $dir SECONDS' again at once (the machine waits 30 s)"
}

start() {
  (( $# >= 5 )) || die "usage: device.sh start DIR COMMIT SECONDS SCRIPT TOML [ARGS...]"
  local dir=$1 commit=$2 seconds=$3
  shift 3
  [[ -f $dir/pid ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null && die "a part is already running in $dir: poll it"
  if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl || die "installing .whl/*.whl failed"
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  export PYTHONUNBUFFERED=1 TICKETFORGE_CACHE=${TICKETFORGE_CACHE:-/tmp/tfcache} STUDY_COMMIT=$commit
  mkdir -p "$dir" && rm -f "$dir/rc"
  date +%s > "$dir/started"
  local script=$1 toml=$2
  shift 2
  setsid nohup bash -c 'python3 "$@" > "$0/study.out" 2>&1; echo $? > "$0/rc"' "$dir" "$script" "$toml" \
    --out "$dir" "$@" < /dev/null > /dev/null 2>&1 &
  echo $! > "$dir/pid"
  poll "$dir" "$seconds"
}

case ${1:-} in
  start) shift; start "$@" ;;
  poll) (( $# == 3 )) || die "usage: device.sh poll DIR SECONDS"; poll "$2" "$3" ;;
  *) die "usage: device.sh start DIR COMMIT SECONDS SCRIPT TOML [ARGS...] | device.sh poll DIR SECONDS" ;;
esac
