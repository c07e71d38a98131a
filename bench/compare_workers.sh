#!/bin/sh
# ../shared/bench in one sitting: Kamailio with children=4, sipdisp in one
# process and sipdisp as 2 worker processes (bench/sipdisp-workers.yaml),
# same rates. CPU is the proxy's whole process tree (supervisor and workers).
# Results land in $OUT (default /tmp/bench-workers); $BENCH is the harness
# (default ../shared/bench beside the checkout).
# usage: bench/compare_workers.sh [RATES] [REPS] [DURATION]
set -e
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${BENCH:-"$here/../shared/bench"}
rates=${1:-400,800,1200,1600}; reps=${2:-1}; duration=${3:-10}
out=${OUT:-/tmp/bench-workers}
mkdir -p "$here/var"
cd "$here"
python3 "$bench/bench.py" calls --label kamailio-c4 --proxy-cmd "$bench/kamailio/start.sh 5060 4" \
    --rates "$rates" --reps "$reps" --duration "$duration" --out "$out"
python3 "$bench/bench.py" calls --label sipdisp-p1 \
    --proxy-cmd "env PYTHONPATH=$here twistd -n --pidfile= sipdisp -c bench/sipdisp-bench.yaml" \
    --rates "$rates" --reps "$reps" --duration "$duration" --out "$out"
python3 "$bench/bench.py" calls --label sipdisp-p2 \
    --proxy-cmd "env PYTHONPATH=$here twistd -n --pidfile= sipdisp -c bench/sipdisp-workers.yaml" \
    --rates "$rates" --reps "$reps" --duration "$duration" --out "$out"
