#!/usr/bin/env bash
# Makes sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer, starting them when
# they are installed but stopped. Says clearly what is missing when it cannot. Sourced by
# scripts/test.sh and scripts/setup.sh.

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

ensure_postgres() {
  pg_up && return 0
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ] && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
    echo "PostgreSQL is not answering on 127.0.0.1:5432; starting it"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start || true
    for _ in $(seq 1 30); do pg_up && return 0; sleep 1; done
  fi
  echo "MISSING: PostgreSQL is not reachable at 127.0.0.1:5432 and could not be started." >&2
  echo "  Install it (Debian: apt-get install postgresql) with trust auth for user postgres," >&2
  echo "  or point WAMESH_TEST_DATABASE_URL at a server where user postgres may create databases." >&2
  return 1
}

ensure_redis() {
  redis_up && return 0
  if command -v redis-server >/dev/null 2>&1; then
    echo "Redis is not answering on 127.0.0.1:6379; starting it"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null || true
    for _ in $(seq 1 30); do redis_up && return 0; sleep 1; done
  fi
  echo "MISSING: Redis is not reachable at 127.0.0.1:6379 and could not be started." >&2
  echo "  Install it (Debian: apt-get install redis-server)." >&2
  return 1
}
