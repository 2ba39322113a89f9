# The README's two commands: `make demo` (install, build, run the main job) and `make test` (install, build,
# run the whole suite). Both are idempotent.
BUILD ?= build
JOBS ?= $(shell nproc)
DEEPMOE := $(BUILD)/tools/deepmoe

.PHONY: deps configure build demo test clean

deps:
	./scripts/install-deps

configure: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release

build: configure
	cmake --build $(BUILD) -j$(JOBS)

demo: build
	$(DEEPMOE) sysinfo

# ctest's summary is the last thing printed.
test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

clean:
	rm -rf $(BUILD) build-asan build-fuzz
