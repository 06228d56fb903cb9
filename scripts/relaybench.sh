#!/usr/bin/env bash
# Outbox relay MySQL -> Kafka against the Watermill forwarder at its default settings, in one
# sitting, on the same MariaDB: the same number of events over the same 100 keys with the same
# payload, each drained into an in-process kfake broker (topic "orders", 3 partitions).
#   ours:      examples/relayload (outbox.Relay + saramaoutbox.Publisher, defaults; it also
#              reads the topic back and checks exactly-once and per-key order)
#   reference: ../shared/tools/peers/watermill-outbox (SubscribeBatchSize 100, its default)
# The two run alternately, ROUNDS times each; the medians and their ratio are printed last.
# Needs the native MariaDB that ../shared/tools/raw-limits/run.sh starts (Unix socket).
# Usage: scripts/relaybench.sh [events, default 20000]   env: ROUNDS (3), MYSQL_SOCKET, WATERMILL_PEER
set -euo pipefail
n=${1:-20000}
rounds=${ROUNDS:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
sock=${MYSQL_SOCKET:-/run/mysqld/mysqld.sock}
peer=${WATERMILL_PEER:-}
if [ -z "$peer" ]; then
  for d in "$root/../shared/tools/peers/watermill-outbox" /work/shared/tools/peers/watermill-outbox; do
    [ -f "$d/main.go" ] && { peer=$d; break; }
  done
fi
[ -n "$peer" ] || { echo "relaybench: Watermill peer not found; set WATERMILL_PEER" >&2; exit 1; }
mariadb -S "$sock" -e 'CREATE DATABASE IF NOT EXISTS relaybench_ck; CREATE DATABASE IF NOT EXISTS relaybench_wm' ||
  { echo "relaybench: no MariaDB on $sock; run ../shared/tools/raw-limits/run.sh first" >&2; exit 1; }

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
(cd "$root" && GOTOOLCHAIN=${GOTOOLCHAIN:-local} go build -o "$bin/relayload" ./examples/relayload)
(cd "$peer" && GOTOOLCHAIN=${GOTOOLCHAIN:-local} go build -o "$bin/wmpeer" .)

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rate() { grep -oE '= [0-9]+ events/s' | grep -oE '[0-9]+'; }
: >"$bin/ours"
: >"$bin/theirs"
for _ in $(seq 1 "$rounds"); do
  out=$("$bin/relayload" -n "$n" -dsn "root@unix($sock)/relaybench_ck?parseTime=true")
  echo "$out"
  echo "$out" | rate >>"$bin/ours"
  out=$("$bin/wmpeer" -n "$n" -dsn "root@unix($sock)/relaybench_wm?parseTime=true")
  echo "$out"
  echo "$out" | rate >>"$bin/theirs"
done
ours=$(median <"$bin/ours")
theirs=$(median <"$bin/theirs")
awk -v o="$ours" -v t="$theirs" -v n="$n" -v r="$rounds" 'BEGIN {
  printf "outbox relay vs Watermill forwarder, %d events, median of %d: %d vs %d events/s, ratio %.2f\n", n, r, o, t, o / t }'
