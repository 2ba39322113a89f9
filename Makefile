# The README's two commands: `make demo` (install, build, run the main job) and `make test` (install, build,
# run the whole suite). Both are idempotent.
BUILD ?= build
JOBS ?= $(shell nproc)
DEEPMOE := $(BUILD)/tools/deepmoe

.PHONY: deps configure build demo default-model default-model-mtp test clean

deps:
	./scripts/install-deps

configure: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release

build: configure
	cmake --build $(BUILD) -j$(JOBS)

# The bundled default model: a DeepSeek-V3-architecture model (4 layers, 16 routed experts + 1 shared, one MTP
# module, its own BPE tokenizer) trained on tinyshakespeare by `deepmoe train` (docs/TRAINING.md). It is kept in
# assets/default-model with its FP8 weights gzip-compressed; `make demo` unpacks it into models/default.
# `make default-model` retrains it from scratch (about 40 minutes on two cores), then fine-tunes its MTP module
# toward the main model's own predictions with the main model frozen (a few minutes; the main-model tensors stay
# byte-identical, docs/TRAINING.md), and replaces the asset.
DEFAULT_MODEL := models/default
DEFAULT_MODEL_ASSET := assets/default-model
DEFAULT_MODEL_RUN := $(BUILD)/default-model-run
DEFAULT_MODEL_MTP_RUN := $(BUILD)/default-model-mtp-run
DEFAULT_MODEL_FILES := config.json tokenizer.json tokenizer_config.json
$(DEFAULT_MODEL)/model.safetensors.gz: $(DEFAULT_MODEL_ASSET)/model.safetensors.gz
	rm -rf $(DEFAULT_MODEL) && mkdir -p $(DEFAULT_MODEL)
	cp $(addprefix $(DEFAULT_MODEL_ASSET)/,$(DEFAULT_MODEL_FILES)) $(DEFAULT_MODEL)/
	gunzip -c $< > $(DEFAULT_MODEL)/model.safetensors
	cp $< $@

demo: build $(DEFAULT_MODEL)/model.safetensors.gz
	$(DEEPMOE) generate -p "ROMEO:" -n 80 --temperature 0.8 --top-k 40 --seed 1

default-model: build
	rm -rf $(DEFAULT_MODEL_RUN) $(DEFAULT_MODEL_MTP_RUN)
	$(DEEPMOE) train --data data/tinyshakespeare.txt --out $(DEFAULT_MODEL_RUN) --preset shakespeare --vocab 1024 \
	  --steps 320 --batch 12 --seq-len 128 --warmup 30 --lr 3e-3 --bias-gamma 0.01 --eval-every 40 \
	  --eval-windows 16 --checkpoint-every 40 --seed 1
	mkdir -p $(DEFAULT_MODEL_ASSET)
	cp $(addprefix $(DEFAULT_MODEL_RUN)/,loss_curve.svg metrics.jsonl) $(DEFAULT_MODEL_ASSET)/
	$(MAKE) default-model-mtp DEFAULT_MODEL_BASE=$(DEFAULT_MODEL_RUN)

# The second half of default-model on its own: fine-tunes the MTP module of the model in DEFAULT_MODEL_BASE (the
# main run's folder) and ships the result. The shipped model's main tensors are DEFAULT_MODEL_BASE's byte for byte.
DEFAULT_MODEL_BASE ?= $(DEFAULT_MODEL_RUN)
default-model-mtp: build
	rm -rf $(DEFAULT_MODEL_MTP_RUN)
	$(DEEPMOE) train --init $(DEFAULT_MODEL_BASE) --mtp-only --mtp-target main --mtp-weight 1 \
	  --data data/tinyshakespeare.txt --out $(DEFAULT_MODEL_MTP_RUN) --steps 600 --batch 12 --seq-len 128 \
	  --warmup 20 --lr 2e-3 --bias-gamma 0.01 --eval-every 50 --eval-windows 16 --seed 1
	mkdir -p $(DEFAULT_MODEL_ASSET)
	cp $(DEFAULT_MODEL_MTP_RUN)/metrics.jsonl $(DEFAULT_MODEL_ASSET)/mtp_metrics.jsonl
	cp $(addprefix $(DEFAULT_MODEL_MTP_RUN)/,$(DEFAULT_MODEL_FILES)) $(DEFAULT_MODEL_ASSET)/
	gzip -9 -n -c $(DEFAULT_MODEL_MTP_RUN)/model.safetensors > $(DEFAULT_MODEL_ASSET)/model.safetensors.gz

# Before the main suite: the core and loading unit tests again under ASan + UBSan (build-asan), then each
# libFuzzer target for FUZZ_SECONDS when clang++ exists (build-fuzz; new corpus entries stay in build-fuzz).
# ctest's summary of the main suite is the last thing printed. 20 s per target keeps the whole run inside the
# 25-minute budget on 2 cores; run longer campaigns with `make test FUZZ_SECONDS=600`.
FUZZ_SECONDS ?= 20
FUZZ_TARGETS := fuzz_safetensors_header:safetensors fuzz_model_config:config fuzz_api_request:api_request \
  fuzz_json_schema:json_schema fuzz_gbnf:gbnf
test: build
	cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDEEPMOE_SANITIZE=ON \
	  -DDEEPMOE_BUILD_BENCH=OFF -DDEEPMOE_WITH_MPI=OFF
	cmake --build build-asan -j$(JOBS) --target core_tests loading_tests
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j$(JOBS) -L unit
	@if command -v clang++ >/dev/null 2>&1; then \
	  set -e; \
	  cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	    -DDEEPMOE_FUZZ=ON -DDEEPMOE_BUILD_TESTS=OFF -DDEEPMOE_BUILD_BENCH=OFF -DDEEPMOE_WITH_MPI=OFF; \
	  cmake --build build-fuzz -j$(JOBS) --target $(foreach t,$(FUZZ_TARGETS),$(firstword $(subst :, ,$(t)))); \
	  for t in $(FUZZ_TARGETS); do \
	    exe=$${t%%:*}; seeds=$${t##*:}; mkdir -p build-fuzz/corpus/$$seeds; \
	    echo "fuzz: $$exe for $(FUZZ_SECONDS) s"; \
	    build-fuzz/fuzz/$$exe -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=build-fuzz/$$exe- \
	      build-fuzz/corpus/$$seeds fuzz/corpus/$$seeds > build-fuzz/$$exe.log 2>&1 \
	      || { tail -n 60 build-fuzz/$$exe.log; echo "fuzz: $$exe FAILED"; exit 1; }; \
	    grep -E '^(Done|stat::number_of_executed_units)' build-fuzz/$$exe.log || true; \
	  done; \
	else \
	  echo "fuzz: clang++ not found, skipping the libFuzzer targets"; \
	fi
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

clean:
	rm -rf $(BUILD) build-asan build-fuzz
