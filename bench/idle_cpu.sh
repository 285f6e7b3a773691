#!/usr/bin/env bash
# CPU an idle worker spends polling its 6 region queues, for one MODELCERT_QUEUE_POLL_S
# (see docs/benchmarks.md, "Idle worker"). Needs PostgreSQL on 127.0.0.1 (trust auth) and
# the project's .venv.   Usage: bench/idle_cpu.sh 0.5
set -euo pipefail
POLL=${1:?usage: bench/idle_cpu.sh POLL_SECONDS}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DB=modelcert_idle_$$
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB" >/dev/null
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB" >/dev/null' EXIT
export MODELCERT_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/$DB MODELCERT_QUEUE_POLL_S=$POLL
"$ROOT/.venv/bin/modelcert" db upgrade >/dev/null
regions=()
for r in us-east-1 us-west-2 eu-west-1 eu-central-1 ap-southeast-1 ap-northeast-1; do
    regions+=(--region "$r")
done
"$ROOT/.venv/bin/modelcert" worker --executor-id "idle-$$" --health-port 0 "${regions[@]}" >/dev/null 2>&1 &
PID=$!
sleep 15  # start-up is not idle
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
t0=$(ticks); sleep 30; t1=$(ticks)
echo "MODELCERT_QUEUE_POLL_S=$POLL: idle worker CPU $(python3 -c "print(round(($t1 - $t0) / $(getconf CLK_TCK) / 30, 3))") of a core"
