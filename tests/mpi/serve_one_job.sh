#!/usr/bin/env bash
# `deepmoe serve` as one job under mpirun: rank 0 listens and answers, rank 1 hosts half of the experts. A greedy
# completion equals `deepmoe generate` in one process; SIGTERM to rank 0 drains and ends the whole job with 0.
# Usage: serve_one_job.sh MPIEXEC DEEPMOE MODEL_DIR WORK_DIR
set -euo pipefail
mpirun=$1 deepmoe=$2 model=$3 work=$4
mkdir -p "$work"
log=$work/serve_mpi.log
want=$("$deepmoe" generate -m "$model" -p Hello -n 6 --temperature 0 -t 1 2>/dev/null)
"$mpirun" --allow-run-as-root --oversubscribe -np 2 "$deepmoe" serve -m "$model" --port 0 -t 1 >"$log" 2>&1 &
launcher=$!
trap 'kill -KILL $launcher 2>/dev/null || true' EXIT
port=""
for _ in $(seq 1 300); do
  port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$log" | head -1)
  grep -q "ready, model" "$log" && break
  kill -0 $launcher 2>/dev/null || break
  sleep 0.1
done
grep -q "ready, model" "$log" || { echo "serve did not become ready:"; cat "$log"; exit 1; }
name=$(basename "$model")
got=$(curl -s "http://127.0.0.1:$port/v1/completions" -H 'content-type: application/json' \
  -d "{\"model\":\"$name\",\"prompt\":\"Hello\",\"max_tokens\":6,\"temperature\":0}" |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s).choices[0].text))')
if [ "$got" != "$want" ]; then
  echo "completion under mpirun: '$got'; one process generates '$want'"; cat "$log"; exit 1
fi
rank0=""
for p in $(pgrep -P "$launcher"); do
  if tr '\0' '\n' <"/proc/$p/environ" | grep -qx 'OMPI_COMM_WORLD_RANK=0'; then rank0=$p; fi
done
[ -n "$rank0" ] || { echo "no rank 0 process found"; exit 1; }
kill -TERM "$rank0"
status=0
wait "$launcher" || status=$?
trap - EXIT
grep -q "deepmoe serve: stopped" "$log" || { echo "no orderly stop:"; cat "$log"; exit 1; }
[ "$status" = 0 ] || { echo "mpirun exited with $status"; cat "$log"; exit 1; }
echo "serve under mpirun -np 2: completion identical to one process, drained and stopped on SIGTERM"
