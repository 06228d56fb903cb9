#!/usr/bin/env bash
# make faultsale: the full-mode flash sale (examples/flashsale: 3,000 buyers, 2,000 units,
# 200 clients; kfake Kafka and the PG simulator in process) run three times with a real
# fault injected mid-race, each time into servers this script starts for itself (a private
# MariaDB on 127.0.0.1:13306 and a private Redis on 127.0.0.1:16379, in a temporary
# directory, stopped at the end; nothing else on the machine is signalled):
#
#   mysql-stall   MariaDB SIGSTOPped for 6 s, then SIGCONT
#   mysql-crash   MariaDB SIGKILLed, restarted on the same data 2 s later (crash recovery)
#   redis-loss    Redis FLUSHALLed, SIGSTOPped for 5 s, then shut down without saving and
#                 restarted empty 3 s later
#
# The driver sends every answer that asks for it (503, 409 request_in_progress, with
# Retry-After) again, as a well-behaved client does, and then checks the invariants: no
# oversell, sold = paid orders, coupons and points conserved, the audit clean. The script
# fails unless every run ends with every invariant ok. The fault is injected once 300
# orders exist (the race is under way). Needs Debian's mariadb-server and redis-server
# (installed when missing) and root, or a user that can run mariadbd.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v mariadbd >/dev/null || need+=(mariadb-server)
command -v mariadb >/dev/null || need+=(mariadb-client)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
for port in 13306 16379; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "faultsale: something already listens on 127.0.0.1:$port; stop it first" >&2
    exit 1
  fi
done
work=$(mktemp -d)
chmod 755 "$work"
user=$(id -un)
[ "$user" = root ] && user=mysql
mysql_pid='' redis_pid=''
cleanup() {
  for p in $mysql_pid $redis_pid; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '== %s (%s)\n' "$*" "$(date -u +%T)" >&2; }
sql() { mariadb --no-defaults --socket="$work/data/mysqld.sock" -uroot "$@"; }

mkdir -p "$work/data"
chown "$user" "$work/data" 2>/dev/null || true
mariadb-install-db --no-defaults --user="$user" --datadir="$work/data" --auth-root-authentication-method=socket >"$work/install.log" 2>&1 ||
  { cat "$work/install.log" >&2; exit 1; }
start_mysql() {
  mariadbd --no-defaults --user="$user" --datadir="$work/data" --socket="$work/data/mysqld.sock" \
    --pid-file="$work/data/mysqld.pid" --port=13306 --bind-address=127.0.0.1 --max-connections=500 >>"$work/mysqld.log" 2>&1 &
  mysql_pid=$!
  for _ in $(seq 1 120); do sql -e 'SELECT 1' >/dev/null 2>&1 && return; sleep 0.5; done
  echo "faultsale: MariaDB did not start:" >&2; tail -20 "$work/mysqld.log" >&2; exit 1
}
start_redis() {
  redis-server --port 16379 --bind 127.0.0.1 --save '' --appendonly no >>"$work/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 1 60); do redis-cli -p 16379 ping >/dev/null 2>&1 && return; sleep 0.2; done
  echo "faultsale: Redis did not start" >&2; exit 1
}
start_mysql
start_redis
sql -e "CREATE USER 'commercekit'@'127.0.0.1' IDENTIFIED BY 'commercekit'; GRANT ALL ON *.* TO 'commercekit'@'127.0.0.1';"
go build -o "$work/flashsale" ./examples/flashsale

# race_under_way: wait until the sale has placed 300 orders.
race_under_way() {
  for _ in $(seq 1 600); do
    n=$(sql -N -e 'SELECT COUNT(*) FROM ck_faultsale.commerce_orders' 2>/dev/null || echo 0)
    [ "${n:-0}" -ge 300 ] && return
    sleep 0.2
  done
  echo "faultsale: the race did not start" >&2; exit 1
}
inject() {
  case $1 in
    mysql-stall) kill -STOP "$mysql_pid"; sleep 6; kill -CONT "$mysql_pid" ;;
    mysql-crash) kill -KILL "$mysql_pid"; wait "$mysql_pid" 2>/dev/null || true; sleep 2; start_mysql ;;
    redis-loss)
      redis-cli -p 16379 flushall >/dev/null
      kill -STOP "$redis_pid"; sleep 5; kill -CONT "$redis_pid"
      redis-cli -p 16379 shutdown nosave >/dev/null 2>&1 || true
      wait "$redis_pid" 2>/dev/null || true
      sleep 3; start_redis ;;
  esac
}

failed=()
for fault in mysql-stall mysql-crash redis-loss; do
  sql -e 'DROP DATABASE IF EXISTS ck_faultsale; CREATE DATABASE ck_faultsale'
  redis-cli -p 16379 flushall >/dev/null
  say "flash sale with $fault"
  "$work/flashsale" -mysql-dsn 'commercekit:commercekit@tcp(127.0.0.1:13306)/ck_faultsale' -redis-addr 127.0.0.1:16379 \
    -buyers 3000 -units 2000 -c 200 >"$work/$fault.txt" 2>"$work/$fault.err" &
  sale=$!
  race_under_way
  say "injecting $fault"
  inject "$fault"
  say "$fault injected; waiting for the sale to end"
  status=0
  wait "$sale" || status=$?
  grep -vE '^(go: downloading|\[mysql\]|redis: )' "$work/$fault.txt"
  if [ "$status" != 0 ]; then
    failed+=("$fault")
    tail -5 "$work/$fault.err" >&2
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "faultsale: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "faultsale: every invariant held under every fault"
