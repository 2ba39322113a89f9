#!/usr/bin/env bash
# The peer-shape cases of docs/BENCHMARKS.md in one command: trimmed checkpoints with the per-layer dimensions of
# Moonlight, DeepSeek-V2-Lite and DeepSeek-V3 (generated once into MODELS_DIR), each benchmarked with `deepmoe
# bench` in every GEMM mode, one mode after the other per model (A/B alternation); then the long-prompt cases on
# the V2-Lite 4-layer shape, each prompt length right after a 512-token run (their ratio is the figure), in w8a32
# and w8a16; and decode at batch 1 on a 27-layer Moonlight shape with 8 routed experts per layer (a decoded token
# reads the same bytes per layer as with 64: its 6 experts, the shared ones and attention). Every JSON line
# carries its own machine line's ratios; the load average is printed before each case because the figures are
# only comparable within one run.
#
# Memory: the Moonlight and V2-Lite cases keep 4 layers (1 dense + 3 MoE; 2.9 GB files, 3.7 GB peak RSS with the
# bench's 0.8 GB machine probe), so each process stays within a 5 GB share of a shared machine. The engine runs a
# long prompt in steps of at most 1024 positions (ExecutorOptions::forward_chunk_tokens), so activations stop
# growing there: on v2-lite-4l 8192 tokens peak at 4.4 GB (7.1 GB in one step); the lengths past 2048 still run
# only with --long, for their time (an 8192-token case takes minutes).
#
# usage: bench/peer_shapes.sh MODELS_DIR [DEEPMOE_BINARY] [--quick | --long | --full]
#   --quick: one prefill run per case, the long-prompt cases at 1024 tokens only
#   --long:  the long-prompt cases also at 4096, 8192 and 16384 tokens
#   --full:  only the peer table's own model, the whole Moonlight shape (27 layers, 64 routed experts, 16.4 GB):
#            prefill 512 and decode at batch 1 in w8a32 and w8a16, alternated twice. Needs ~18 GB of memory
#            free for the page cache and the process, or the figures measure the disk.
set -euo pipefail

models=${1:?usage: bench/peer_shapes.sh MODELS_DIR [DEEPMOE_BINARY] [--quick | --long | --full]}
deepmoe=${2:-build/tools/deepmoe}
quick=${3:-}
runs=3
long_prompts=(1024 2048)
if [[ "$quick" == "--quick" ]]; then
  runs=1
  long_prompts=(1024)
elif [[ "$quick" == "--long" ]]; then
  long_prompts=(1024 2048 4096 8192 16384)
elif [[ "$quick" == "--full" ]]; then
  full="$models/moonlight-27l"
  [[ -f "$full/config.json" ]] || "$deepmoe" gen-model --preset moonlight -o "$full"
  for round in 1 2; do
    for mode in w8a32 w8a16; do
      echo "# moonlight-27l (round $round) --gemm $mode; load: $(cut -d' ' -f1-3 /proc/loadavg)"
      "$deepmoe" bench "$full" --prompt 512 --decode-steps 16 --batch 1 --prefill-runs 1 --gemm "$mode" -q
    done
  done
  exit 0
elif [[ -n "$quick" ]]; then
  echo "bench/peer_shapes.sh: unknown option '$quick' (expected --quick, --long or --full)" >&2
  exit 2
fi

# name | gen-model arguments
cases=(
  "moonlight-4l|--preset moonlight --layers 4"
  "v3-dense-3l|--preset v3 --layers 3 --dense-layers 3 --no-mtp"
  "v2-lite-4l|--preset v2-lite --layers 4"
  "moonlight-27l-8e|--preset moonlight --layers 27 --experts 8"
)
peer_cases=(moonlight-4l v2-lite-4l v3-dense-3l)

mkdir -p "$models"
for c in "${cases[@]}"; do
  name=${c%%|*}
  args=${c#*|}
  if [[ ! -f "$models/$name/config.json" ]]; then
    # shellcheck disable=SC2086  # args is a list of options
    "$deepmoe" gen-model $args -o "$models/$name"
  fi
done

load() { cut -d' ' -f1-3 /proc/loadavg; }

for name in "${peer_cases[@]}"; do
  for mode in w8a32 w8a16 w8a8; do
    echo "# $name --gemm $mode; load: $(load)"
    "$deepmoe" bench "$models/$name" --prompt 512 --decode-steps 16 --batch 1 --prefill-runs "$runs" --gemm "$mode"
  done
done

# Long prompts: prefill tok/s at P tokens over tok/s at 512 (the run just before), and the attention cores' share
# and rate (attention_fraction_of_fma_peak) at each length.
for prompt in "${long_prompts[@]}"; do
  for mode in w8a32 w8a16; do
    for p in 512 "$prompt"; do
      echo "# v2-lite-4l prompt $p --gemm $mode (long-prompt pair $prompt); load: $(load)"
      "$deepmoe" bench "$models/v2-lite-4l" --prompt "$p" --decode-steps 1 --batch 1 --prefill-runs 1 --gemm "$mode" -q
    done
  done
done

# Deep-model decode at batch 1 against the STREAM roofline, w8a32 and w8a16 alternated.
for mode in w8a32 w8a16 w8a32 w8a16; do
  echo "# moonlight-27l-8e decode --gemm $mode; load: $(load)"
  "$deepmoe" bench "$models/moonlight-27l-8e" --prompt 64 --decode-steps 32 --batch 1 --prefill-runs 1 \
    --gemm "$mode" -q
done
