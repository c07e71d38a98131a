#!/bin/sh
# Run ../shared/bench against Kamailio (one worker) and sipdisp in one sitting,
# same rates, same machine. Results land in $OUT (default /tmp/bench-results).
# usage: bench/compare.sh [RATES] [REPS] [DURATION]
set -e
here=$(cd "$(dirname "$0")/.." && pwd)
bench="$here/../shared/bench"
rates=${1:-200,400,800,1600}; reps=${2:-3}; duration=${3:-10}
out=${OUT:-/tmp/bench-results}
mkdir -p "$here/var"
cd "$here"
python3 "$bench/bench.py" calls --label kamailio-c1 --proxy-cmd "$bench/kamailio/start.sh 5060 1" \
    --rates "$rates" --reps "$reps" --duration "$duration" --out "$out"
python3 "$bench/bench.py" calls --label sipdisp \
    --proxy-cmd "env PYTHONPATH=$here twistd -n --pidfile= sipdisp -c bench/sipdisp-bench.yaml" \
    --rates "$rates" --reps "$reps" --duration "$duration" --out "$out"
