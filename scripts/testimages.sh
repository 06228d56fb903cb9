#!/usr/bin/env bash
# Prepares what the Testcontainers suites need on a machine that reaches no container registry:
#   1. a running Docker engine (starts Debian's dockerd as root when `docker info` fails);
#   2. the MySQL and Redis images the fixtures use. When an image is neither present nor
#      pullable, it builds a local equivalent from Debian packages (debootstrap + docker import):
#        commercekit/mariadb:test  - MariaDB honouring the official mysql image's environment contract
#        commercekit/redis:test    - redis-server bound to 0.0.0.0
#   3. kcat, the independent Kafka client used to check what the outbox produced.
# It prints the `export` lines for the images it settled on; `make test` evaluates them.
# Idempotent: a second run finds everything in place and does nothing.
set -euo pipefail

log() { printf 'testimages: %s\n' "$*" >&2; }
die() { printf 'testimages: FATAL: %s\n' "$*" >&2; exit 1; }

apt_install() {
  [ "$(id -u)" = 0 ] || die "need root to apt-get install $*; install them by hand"
  command -v apt-get >/dev/null || die "no apt-get to install $*; install them by hand"
  if [ -z "${_apt_updated:-}" ]; then apt-get update -qq >/dev/null; _apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_engine() {
  if docker info >/dev/null 2>&1; then return; fi
  command -v dockerd >/dev/null || { log "no Docker engine: installing Debian's docker.io"; apt_install docker.io; }
  [ "$(id -u)" = 0 ] || die "no Docker engine answers and starting dockerd needs root"
  log "starting dockerd"
  # An engine that died leaves its containerd's pid file behind; once the pid is reused,
  # a new dockerd takes it for a live containerd and times out connecting to it.
  local pidfile=/var/run/docker/containerd/containerd.pid
  if [ -f "$pidfile" ] && ! pgrep -x containerd >/dev/null; then
    log "removing the stale $pidfile of a containerd that is gone"
    rm -f "$pidfile"
  fi
  mkdir -p /var/log
  nohup dockerd >/var/log/commercekit-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && return; sleep 0.5; done
  die "dockerd did not come up; see /var/log/commercekit-dockerd.log"
}

# have IMAGE: present locally, or pulled.
have() {
  docker image inspect "$1" >/dev/null 2>&1 && return 0
  timeout 20 docker pull -q "$1" >/dev/null 2>&1
}

ROOTFS_CACHE=${COMMERCEKIT_ROOTFS_CACHE:-/var/cache/commercekit}

rootfs() { # rootfs NAME PACKAGES -> path of a debootstrapped tree
  local dir=$ROOTFS_CACHE/$1
  if [ ! -x "$dir/usr/bin/env" ]; then
    command -v debootstrap >/dev/null || apt_install debootstrap
    log "debootstrap $1 ($2), about a minute"
    rm -rf "$dir"; mkdir -p "$dir"
    local mirror
    mirror=$(grep -rhoE '^(deb|URIs:)\s+\S+' /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null | awk '{print $2}' | grep -m1 debian || true)
    debootstrap --variant=minbase --include="$2" bookworm "$dir" ${mirror:-} >/dev/null \
      || die "debootstrap of $1 failed (it needs Debian's package mirror)"
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  fi
  echo "$dir"
}

build_mariadb() {
  local dir; dir=$(rootfs mariadb mariadb-server)
  cat >"$dir/usr/local/bin/entrypoint.sh" <<'ENTRY'
#!/bin/bash
# Honours the official mysql image's contract: MYSQL_ROOT_PASSWORD, MYSQL_ALLOW_EMPTY_PASSWORD,
# MYSQL_DATABASE, MYSQL_USER, MYSQL_PASSWORD; binds 0.0.0.0; creates the user for '%'.
set -e
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if [ ! -d /var/lib/mysql/mysql ]; then
  mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null
fi
init=/tmp/init.sql
{
  echo "FLUSH PRIVILEGES;"
  echo "DELETE FROM mysql.global_priv WHERE User='';"
  if [ -n "$MYSQL_ROOT_PASSWORD" ]; then
    echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$MYSQL_ROOT_PASSWORD';"
    echo "CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY '$MYSQL_ROOT_PASSWORD';"
  else
    echo "CREATE USER IF NOT EXISTS 'root'@'%';"
  fi
  echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
  [ -n "$MYSQL_DATABASE" ] && echo "CREATE DATABASE IF NOT EXISTS \`$MYSQL_DATABASE\`;"
  if [ -n "$MYSQL_USER" ] && [ "$MYSQL_USER" != root ]; then
    echo "CREATE USER IF NOT EXISTS '$MYSQL_USER'@'%' IDENTIFIED BY '$MYSQL_PASSWORD';"
    # Test fixtures create one database per test, so the application user may create databases.
    echo "GRANT ALL ON *.* TO '$MYSQL_USER'@'%';"
  fi
  echo "FLUSH PRIVILEGES;"
} >"$init"
exec mariadbd --user=mysql --datadir=/var/lib/mysql --bind-address=0.0.0.0 --port=3306 \
  --skip-name-resolve --init-file="$init" \
  --innodb-flush-log-at-trx-commit=2 --innodb-buffer-pool-size=256M --max-connections=1000 \
  --character-set-server=utf8mb4 --collation-server=utf8mb4_bin "$@"
ENTRY
  chmod +x "$dir/usr/local/bin/entrypoint.sh"
  log "importing commercekit/mariadb:test"
  tar -C "$dir" -c . | docker import -c 'ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]' -c 'EXPOSE 3306' - commercekit/mariadb:test >/dev/null
}

build_redis() {
  local dir; dir=$(rootfs redis redis-server)
  log "importing commercekit/redis:test"
  tar -C "$dir" -c . | docker import \
    -c 'ENTRYPOINT ["/usr/bin/redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]' \
    -c 'EXPOSE 6379' - commercekit/redis:test >/dev/null
}

ensure_engine
command -v kcat >/dev/null || { log "installing kcat"; apt_install kcat || log "kcat unavailable (only the outbox's cross-check uses it)"; }

mysql_image=${COMMERCEKIT_MYSQL_IMAGE:-mysql:8.4}
redis_image=${COMMERCEKIT_REDIS_IMAGE:-redis:7.4}
if ! have "$mysql_image"; then
  mysql_image=commercekit/mariadb:test
  have "$mysql_image" || build_mariadb
fi
if ! have "$redis_image"; then
  redis_image=commercekit/redis:test
  have "$redis_image" || build_redis
fi
log "MySQL image: $mysql_image; Redis image: $redis_image"
echo "export COMMERCEKIT_MYSQL_IMAGE=$mysql_image COMMERCEKIT_REDIS_IMAGE=$redis_image"
