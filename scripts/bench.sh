#!/usr/bin/env bash
# make bench: every figure of issue 16 beside its reference, measured in one sitting on this
# machine's loopback, with the ratio and the target. Keep the machine quiet while it runs
# (about 10 minutes).
#
# The references come from the tools shipped beside the checkout (../shared/tools, or
# $COMMERCEKIT_SHARED/tools): raw-limits/run.sh installs and starts Debian's redis-server and
# mariadb-server on loopback when missing and prints the raw Redis and MariaDB rates;
# peers/watermill-outbox is the Watermill forwarder; constjson the cheapest HTTP read.
# BENCH_SECONDS (default 5) is how long each rate is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
shared=$(cd "${COMMERCEKIT_SHARED:-../shared}" 2>/dev/null && pwd) || true
secs=${BENCH_SECONDS:-5}
for t in raw-limits/run.sh peers/watermill-outbox/main.go constjson/main.go; do
  if [ -z "$shared" ] || [ ! -f "$shared/tools/$t" ]; then
    echo "bench: missing ${COMMERCEKIT_SHARED:-../shared}/tools/$t: the reference tools ship beside the checkout (set COMMERCEKIT_SHARED to their parent)" >&2
    exit 1
  fi
done
command -v wrk >/dev/null || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
say() { printf '== %s (%s)\n' "$*" "$(date -u +%T)" >&2; }
# num LINE-PATTERN FILE: the first number after the pattern's match on the last matching line.
num() { grep -E "$1" "$2" | tail -1 | grep -oE "$1[^0-9]*[0-9.]+" | grep -oE '[0-9.]+$'; }
# metric UNIT FILE: a benchmark's reported metric, e.g. ops/s.
metric() { grep -oE "[0-9.e+]+ $1" "$2" | tail -1 | awk '{printf "%.0f", $1}'; }

# The Redis and MariaDB rates move by ±20 % from minute to minute on this kind of machine:
# BENCH_ROUNDS alternating rounds (default 3) of the raw limits and of our inventory
# benchmarks, and every figure is the median of its rounds.
rounds=${BENCH_ROUNDS:-3}
# bench_ops NAME FILE: the ops/s of sub-benchmark NAME.
bench_ops() { grep -E "BenchmarkHotSKU/$1(-[0-9]+)? " "$2" | grep -oE '[0-9.e+]+ ops/s' | awk '{printf "%.0f", $1}'; }
# rates FIGURE: every round's value of FIGURE; med FIGURE: their median.
rates() { paste -sd' ' "$work/fig.$1"; }
med() { sort -n "$work/fig.$1" | awk '{ a[NR] = $1 } END { printf "%.0f", a[int((NR + 1) / 2)] }'; }
record() { echo "$2" >>"$work/fig.$1"; }
dsn='commercekit:commercekit@tcp(127.0.0.1:3306)'
for i in $(seq 1 "$rounds"); do
  say "raw limits $i/$rounds (${shared}/tools/raw-limits/run.sh $secs)"
  bash "$shared/tools/raw-limits/run.sh" "$secs" | tee "$work/raw.txt" >&2
  record redis_raw "$(grep 'redis raw EVALSHA' "$work/raw.txt" | grep -oE '[0-9.]+ requests' | grep -oE '^[0-9.]+')"
  record sql_hot "$(grep 'mysql raw tx (conditional UPDATE + INSERT), 50 conns, 1 rows' "$work/raw.txt" | grep -oE '[0-9.]+ tx/s' | grep -oE '^[0-9.]+')"
  record sql_spread "$(grep 'mysql raw tx (conditional UPDATE + INSERT), 50 conns, 1000 rows' "$work/raw.txt" | grep -oE '[0-9.]+ tx/s' | grep -oE '^[0-9.]+')"
  if [ "$i" = 1 ]; then
    mariadb -e "CREATE USER IF NOT EXISTS 'commercekit'@'127.0.0.1' IDENTIFIED BY 'commercekit';
      GRANT ALL ON *.* TO 'commercekit'@'127.0.0.1';
      DROP DATABASE IF EXISTS ck_read; CREATE DATABASE ck_read;"
  fi
  mariadb -e "DROP DATABASE IF EXISTS ck_bench; CREATE DATABASE ck_bench;"
  redis-cli -h 127.0.0.1 -n 13 flushdb >/dev/null
  redis-cli -h 127.0.0.1 -n 14 flushdb >/dev/null
  say "redisinventory Reserve on one hot SKU $i/$rounds: raw EVALSHA from Go, plain Redis, journaled (Durable)"
  TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1 TESTCONTAINERS_RYUK_DISABLED=true COMMERCEKIT_MYSQL_DSN="$dsn/ck_bench?parseTime=true" COMMERCEKIT_REDIS_ADDR=127.0.0.1:6379 \
    go test -run '^$' -bench 'BenchmarkHotSKU/(raw|redis|durable)$' -benchtime "${secs}s" ./inventory/redisinventory/ | tee "$work/redis.$i.txt" >&2
  record redis_ours "$(bench_ops redis "$work/redis.$i.txt")"
  record redis_durable "$(bench_ops durable "$work/redis.$i.txt")"
  say "sqlinventory Reserve on one hot SKU $i/$rounds: raw transaction from Go, group commit"
  TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1 TESTCONTAINERS_RYUK_DISABLED=true COMMERCEKIT_MYSQL_DSN="$dsn/ck_bench?parseTime=true" \
    go test -run '^$' -bench 'BenchmarkHotSKU/(raw|grouped)$' -benchtime "${secs}s" ./inventory/sqlinventory/ | tee "$work/sqlhot.$i.txt" >&2
  record sql_ours "$(bench_ops grouped "$work/sqlhot.$i.txt")"
done
redis_raw=$(med redis_raw) sql_hot=$(med sql_hot) sql_spread=$(med sql_spread)
redis_ours=$(med redis_ours) redis_durable=$(med redis_durable) sql_ours=$(med sql_ours)

say "outbox relay vs the Watermill forwarder (20,000 events, median of 3 alternating rounds)"
WATERMILL_PEER="$shared/tools/peers/watermill-outbox" ROUNDS=3 bash scripts/relaybench.sh 20000 | tee "$work/relay.txt" >&2
relay=$(grep -oE 'median of [0-9]+: [0-9]+ vs' "$work/relay.txt" | grep -oE '[0-9]+ vs' | grep -oE '^[0-9]+')
wm=$(grep -oE 'vs [0-9]+ events/s, ratio' "$work/relay.txt" | grep -oE '[0-9]+')

say "stock read over HTTP (wrk, 64 connections, ${secs}s each)"
go build -o "$work/refserver" ./refserver
(cd "$shared/tools/constjson" && go build -o "$work/constjson" .)
for port in 18080 18081 18090; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "bench: something already listens on 127.0.0.1:$port; stop it first (the read benchmark needs 18080, 18081 and 18090)" >&2
    exit 1
  fi
done
"$work/constjson" -addr 127.0.0.1:18090 & pids+=($!)
# The mixed-mode server needs secrets of its own: one written here would be public, and
# refserver refuses the ones this script once wrote (server.PublishedSecrets).
jwt_secret=$(openssl rand -hex 32)
webhook_secret=$(openssl rand -hex 32)
COMMERCEKIT_ADDR=127.0.0.1:18080 COMMERCEKIT_DB_DSN="$work/embedded.db" "$work/refserver" serve >"$work/embedded.log" 2>&1 & pids+=($!)
COMMERCEKIT_ADDR=127.0.0.1:18081 COMMERCEKIT_DB_DRIVER=mysql COMMERCEKIT_DB_DSN="$dsn/ck_read" COMMERCEKIT_REDIS_ADDR=127.0.0.1:6379 COMMERCEKIT_REDIS_DB=13 \
  COMMERCEKIT_JWT_SECRET="$jwt_secret" COMMERCEKIT_WEBHOOK_SECRET="$webhook_secret" \
  "$work/refserver" serve >"$work/redis.log" 2>&1 & pids+=($!)
for port in 18080 18081 18090; do
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/v1/products/kbd-001/stock" >/dev/null && break; sleep 0.2; done
done
read_wrk() { wrk -t2 -c64 -d"${secs}s" "http://127.0.0.1:$1/v1/products/kbd-001/stock" | tee -a "$work/wrk.txt" | grep -oE 'Requests/sec: *[0-9.]+' | grep -oE '[0-9.]+$'; }
read_const=$(read_wrk 18090)
read_embedded=$(read_wrk 18080)
read_redis=$(read_wrk 18081)
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pids=()

# The sale moves by ±20 % from run to run: FLASH_ROUNDS alternating rounds (default 3), and
# the report takes the run with the median rate of each mode. Every full-mode run needs a
# fresh database and Redis database (each starts its own PG simulator, which the audit asks).
rounds=${FLASH_ROUNDS:-3}
for i in $(seq 1 "$rounds"); do
  say "flash sale $i/$rounds, full mode in process (3,000 buyers, 3,000 units, 200 clients; MariaDB + Redis on loopback, kfake, PG simulator at zero latency)"
  mariadb -e "DROP DATABASE IF EXISTS ck_flashsale; CREATE DATABASE ck_flashsale;"
  redis-cli -h 127.0.0.1 -n 14 flushdb >/dev/null
  go run ./examples/flashsale -mysql-dsn "$dsn/ck_flashsale" -redis-addr 127.0.0.1:6379 -redis-db 14 -buyers 3000 -units 3000 -c 200 | tee "$work/full.$i.txt" >&2
  say "flash sale $i/$rounds, embedded default (same sale)"
  go run ./examples/flashsale -buyers 3000 -units 3000 -c 200 | tee "$work/embedded.$i.txt" >&2
done
say "the raw spread transaction grouped and pipelined (internal/rawshapes, ${secs}s per shape)"
go run ./internal/rawshapes -dsn 'root@unix(/run/mysqld/mysqld.sock)/rawlimits' -d "${secs}s" | tee "$work/shapes.txt" >&2
sale() { # file -> "checkouts/s place-p99 pay-p99"
  printf '%s %s %s\n' "$(grep -oE '[0-9]+ checkouts/s' "$1" | grep -oE '^[0-9]+')" \
    "$(awk '/place order/ {print $5}' "$1")" "$(awk '/^  pay / {print $4}' "$1")"
}
# median MODE: the report of MODE's run with the median rate.
median() {
  for f in "$work/$1".*.txt; do printf '%s %s\n' "$(sale "$f" | cut -d' ' -f1)" "$f"; done |
    sort -n | awk '{ a[NR] = $2 } END { print a[int((NR + 1) / 2)] }'
}
cp "$(median full)" "$work/full.txt"
cp "$(median embedded)" "$work/embedded.txt"
all_rates() { for f in "$work/$1".*.txt; do sale "$f" | cut -d' ' -f1; done | paste -sd' '; }
read -r full_cps full_place full_pay <<<"$(sale "$work/full.txt")"
read -r emb_cps emb_place emb_pay <<<"$(sale "$work/embedded.txt")"
full_rt=$(grep 'per checkout' "$work/full.txt" | sed 's/^ *per checkout *//')

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'; }
checkout_ref=$(awk -v s="$sql_spread" 'BEGIN { printf "%.0f", s / 3 }')
echo
echo "commercekit bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| %-44s | %-24s | %-40s | %6s | %-7s |\n' "workload" "commercekit" "reference (same sitting)" "ratio" "target"
printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..46})" "$(printf -- '-%.0s' {1..26})" "$(printf -- '-%.0s' {1..42})" "--------" "---------"
printf '| %-44s | %-24s | %-40s | %6s | %-7s |\n' \
  "checkout, full mode (place p99 / pay p99)" "$full_cps/s ($full_place / $full_pay)" "raw spread tx ÷ 3 = $checkout_ref/s" "$(ratio "$full_cps" "$checkout_ref")" "≥ 0.5" \
  "checkout, embedded default (p99s)" "$emb_cps/s ($emb_place / $emb_pay)" "-" "-" "-" \
  "sqlinventory Reserve, one hot SKU" "$sql_ours/s" "raw hot-row tx $sql_hot/s" "$(ratio "$sql_ours" "$sql_hot")" "≥ 3" \
  "outbox relay, 20,000 events, default batch" "$relay events/s" "Watermill forwarder $wm events/s" "$(ratio "$relay" "$wm")" "≥ 3" \
  "stock read, embedded (wrk 64 conns)" "$read_embedded req/s" "constant JSON $read_const req/s" "$(ratio "$read_embedded" "$read_const")" "≥ 0.7" \
  "stock read, MySQL + Redis" "$read_redis req/s" "constant JSON $read_const req/s" "$(ratio "$read_redis" "$read_const")" "≥ 0.7" \
  "redisinventory Reserve, one hot SKU" "$redis_ours/s" "raw EVALSHA $redis_raw/s" "$(ratio "$redis_ours" "$redis_raw")" "≥ 0.8" \
  "same, journaled in SQL (full mode's Durable)" "$redis_durable/s" "raw EVALSHA $redis_raw/s" "$(ratio "$redis_durable" "$redis_raw")" "-"
echo "full-mode round trips per checkout: $full_rt"
echo "flash-sale rates of every round (the table shows the median run): full $(all_rates full), embedded $(all_rates embedded)"
echo "every round (the table shows medians): redis-benchmark $(rates redis_raw), ours $(rates redis_ours), Durable $(rates redis_durable);"
echo "  raw hot-row tx $(rates sql_hot), group commit $(rates sql_ours); raw spread tx $(rates sql_spread)"
echo "multiples of the raw rate measured from Go in the same benchmark run (x-raw):"
grep -hE 'BenchmarkHotSKU/(redis|durable|grouped)' "$work"/redis.*.txt "$work"/sqlhot.*.txt | sed 's/^/  /'
echo "what fewer round trips would gain on the raw spread transaction (the checkout needs about 3x more):"
sed 's/^/  /' "$work/shapes.txt"
