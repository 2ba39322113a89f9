#!/usr/bin/env bash
# What the HTTP layer costs: the same workload through `deepmoe serve` (bench/serve_bench.mjs, streaming clients on
# loopback) and through `deepmoe bench --concurrency` (the batch scheduler in-process), alternated round by round
# (the order flips every round, so a drifting machine favours neither). Each level C is one wave of C requests
# submitted together: PROMPT token-id prompts of their own (no shared prefix), TOKENS greedy tokens each, end of
# sequence ignored. Prints the JSON lines of both sides; compare output_tokens_per_s level by level.
#
# usage: bench/serve_vs_engine.sh MODEL_DIR [DEEPMOE_BINARY]
#   env: LEVELS (1,8,32,100), ROUNDS (3), PROMPT (16), TOKENS (32), PORT (18431), VOCAB (ids drawn below it, 100000)
set -euo pipefail

model=${1:?usage: bench/serve_vs_engine.sh MODEL_DIR [DEEPMOE_BINARY]}
deepmoe=${2:-build/tools/deepmoe}
levels=${LEVELS:-1,8,32,100}
rounds=${ROUNDS:-3}
prompt=${PROMPT:-16}
tokens=${TOKENS:-32}
port=${PORT:-18431}
vocab=${VOCAB:-100000}
max_running=$(tr , '\n' <<<"$levels" | sort -n | tail -1)

log=$(mktemp)
"$deepmoe" serve -m "$model" --port "$port" --max-running "$max_running" --max-batch-tokens 512 \
  --max-queue "$((2 * max_running))" >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  kill -0 $server 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 1
done
http() {
  node "$(dirname "$0")/serve_bench.mjs" --url "http://127.0.0.1:$port" --concurrency "$1" --waves 1 \
    --prompt-tokens "$prompt" --max-tokens "$tokens" --vocab "$vocab"
}
engine() {
  "$deepmoe" bench "$model" --prompt 16 --prefill-runs 1 --decode-steps 4 --batch 1 --concurrency "$levels" \
    --serving-prompt "$prompt" --serving-tokens "$tokens" --shared-prefix 0 --max-batch-tokens 512 2>/dev/null |
    grep -E '"case":"(serving|machine)"'
}
http 8 >/dev/null  # warm-up: the server's first requests pay for page faults and buffer growth
for r in $(seq "$rounds"); do
  for side in $( ((r % 2)) && echo "engine http" || echo "http engine"); do
    echo "{\"round\":$r,\"side\":\"$side\",\"load\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
    if [[ $side == engine ]]; then engine; else http "$levels"; fi
  done
done
