#!/usr/bin/env bash
# The image's roles. Every role runs in the foreground so the container lives and dies with it.
#   serve        the snrlab API (needs SNRLAB_DATABASE_URL; SNRLAB_RAY_ADDRESS joins a cluster)
#   ray-head     a Ray head that schedules no work itself (--num-cpus=0)
#   ray-worker   a Ray worker joining $RAY_HEAD_ADDRESS (host:port)
#   anything else is run as a command
set -euo pipefail
role="${1:-serve}"
shift || true
case "$role" in
  serve)
    : "${SNRLAB_DATABASE_URL:?SNRLAB_DATABASE_URL must be set}"
    snrlab db upgrade
    exec snrlab serve --host 0.0.0.0 --port "${SNRLAB_PORT:-8000}" "$@"
    ;;
  ray-head)
    exec ray start --head --num-cpus=0 --port=6379 --ray-client-server-port=10001 \
      --dashboard-host=0.0.0.0 --dashboard-port=8265 --block "$@"
    ;;
  ray-worker)
    : "${RAY_HEAD_ADDRESS:?RAY_HEAD_ADDRESS must be set (host:port of the Ray head)}"
    exec ray start --address="$RAY_HEAD_ADDRESS" --block "$@"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
