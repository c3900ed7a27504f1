#!/usr/bin/env bash
# Makes sure the real services the integration tests use are up on this machine, and
# prints `export` lines pointing at them:
#   PostgreSQL on 127.0.0.1:5432 (trust auth), with a fresh database for this run
#   Redis on 127.0.0.1:6379
#   an S3-compatible server (moto, from PyPI) on 127.0.0.1:$VOXQ_TEST_S3_PORT (9000)
# Each is checked first and started (installed if missing) only when absent.
#
#   eval "$(scripts/services.sh up)"     # start/check, create the database, export env
#   scripts/services.sh down DBNAME      # drop that database, stop our moto server
set -euo pipefail
s3_port=${VOXQ_TEST_S3_PORT:-9000}
cache=${XDG_CACHE_HOME:-$HOME/.cache}
moto_venv=$cache/voxq-moto-venv
moto_pid=$cache/voxq-moto-$s3_port.pid
log() { echo "services: $*" >&2; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo

wait_for() { # wait_for SECONDS CMD...
  local n=$(( $1 * 10 )); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

postgres_up() {
  if ! command -v pg_isready >/dev/null || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    log "starting PostgreSQL"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    wait_for 30 pg_isready -q -h 127.0.0.1 -p 5432 || { log "PostgreSQL did not start"; exit 1; }
  fi
}

redis_up() {
  if ! command -v redis-server >/dev/null; then
    log "installing Redis"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    log "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for 10 redis-cli -h 127.0.0.1 -p 6379 ping || { log "Redis did not start"; exit 1; }
  fi
}

s3_up() {
  if curl -fsS "http://127.0.0.1:$s3_port/moto-api/" >/dev/null 2>&1; then return; fi
  if [ ! -x "$moto_venv/bin/moto_server" ]; then
    log "installing moto[server] into $moto_venv"
    python3 -m venv "$moto_venv"
    "$moto_venv/bin/pip" install --quiet "moto[server]>=5,<6"
  fi
  log "starting moto on 127.0.0.1:$s3_port"
  nohup "$moto_venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port" >"$cache/voxq-moto-$s3_port.log" 2>&1 &
  echo $! >"$moto_pid"
  wait_for 30 curl -fsS "http://127.0.0.1:$s3_port/moto-api/" || { log "moto did not start"; exit 1; }
}

case "${1:-up}" in
  up)
    mkdir -p "$cache"
    postgres_up
    redis_up
    s3_up
    db="voxq_test_$(date +%Y%m%d%H%M%S)_$$"
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $db" >/dev/null
    log "PostgreSQL, Redis and S3 are up; fresh database $db"
    cat <<ENV
export VOXQ_TEST_DATABASE=$db
export VOXQ_DATABASE_URL=postgres://postgres@127.0.0.1:5432/$db
export VOXQ_REDIS_URL=redis://127.0.0.1:6379
export VOXQ_S3_ENDPOINT=http://127.0.0.1:$s3_port
export VOXQ_S3_REGION=us-east-1
export VOXQ_S3_BUCKET=voxq-test
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
ENV
    ;;
  down)
    db=${2:-${VOXQ_TEST_DATABASE:-}}
    if [ -n "$db" ]; then
      psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
    fi
    if [ -f "$moto_pid" ]; then kill "$(cat "$moto_pid")" 2>/dev/null || true; rm -f "$moto_pid"; fi
    ;;
  *) echo "usage: $0 up | down [DBNAME]" >&2; exit 2 ;;
esac
