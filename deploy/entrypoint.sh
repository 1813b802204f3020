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
    if [ -n "${SNRLAB_RAY_ADDRESS:-}" ] && [ "${SNRLAB_RAY_ADDRESS#ray://}" = "$SNRLAB_RAY_ADDRESS" ]; then
      # a Ray driver joins a cluster by host:port from one of its nodes: this container becomes a
      # node that offers no CPUs or GPUs, so it runs the API and no training
      ray start --address="$SNRLAB_RAY_ADDRESS" --num-cpus=0 --num-gpus=0 --disable-usage-stats
    fi
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
