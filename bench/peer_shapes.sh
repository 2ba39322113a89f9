#!/usr/bin/env bash
# The peer-shape cases of docs/BENCHMARKS.md in one command: trimmed checkpoints with the dimensions of Moonlight,
# DeepSeek-V2-Lite and DeepSeek-V3 (each under 6 GB, generated once into MODELS_DIR), each benchmarked with
# `deepmoe bench` in every GEMM mode, one mode after the other per model (A/B alternation), then the long-prompt
# cases on the V2-Lite shape. Every JSON line carries its own machine line's ratios; the load average is printed
# before each case because the figures are only comparable within one run.
#
# usage: bench/peer_shapes.sh MODELS_DIR [DEEPMOE_BINARY] [--quick]
#   --quick: one prefill run per case and prompts 512 and 1024 only for the long-prompt cases
set -euo pipefail

models=${1:?usage: bench/peer_shapes.sh MODELS_DIR [DEEPMOE_BINARY] [--quick]}
deepmoe=${2:-build/tools/deepmoe}
quick=${3:-}
runs=3
long_prompts=(512 1024 4096 8192)
if [[ "$quick" == "--quick" ]]; then
  runs=1
  long_prompts=(512 1024)
fi

# name | gen-model arguments
cases=(
  "moonlight-6l|--preset moonlight --layers 6"
  "v2-lite-6l|--preset v2-lite --layers 6"
  "v3-dense-3l|--preset v3 --layers 3 --dense-layers 3 --no-mtp"
)

mkdir -p "$models"
for c in "${cases[@]}"; do
  name=${c%%|*}
  args=${c#*|}
  if [[ ! -f "$models/$name/config.json" ]]; then
    # shellcheck disable=SC2086  # args is a list of options
    "$deepmoe" gen-model $args -o "$models/$name"
  fi
done

for c in "${cases[@]}"; do
  name=${c%%|*}
  for mode in w8a32 w8a16 w8a8; do
    echo "# $name --gemm $mode; load: $(cut -d' ' -f1-3 /proc/loadavg)"
    "$deepmoe" bench "$models/$name" --prompt 512 --decode-steps 16 --batch 1 --prefill-runs "$runs" --gemm "$mode"
  done
done

# Long prompts: prefill tok/s and the attention cores' share and rate at each length.
for prompt in "${long_prompts[@]}"; do
  for mode in w8a32 w8a16; do
    echo "# v2-lite-6l long prompt $prompt --gemm $mode; load: $(cut -d' ' -f1-3 /proc/loadavg)"
    "$deepmoe" bench "$models/v2-lite-6l" --prompt "$prompt" --decode-steps 1 --batch 1 --prefill-runs 1 \
      --gemm "$mode"
  done
done
