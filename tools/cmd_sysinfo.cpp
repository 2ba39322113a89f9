// `deepmoe sysinfo`: what deepmoe sees of this machine (ISA level chosen, threads).
#include <CLI/CLI.hpp>

#include <cstdio>

#include "command.h"
#include "core/cpu_features.h"
#include "core/thread_pool.h"

namespace deepmoe::tools {
namespace {

void run_sysinfo() {
  const CpuFeatures& f = cpu_features();
  std::printf("isa: %s\n", isa_level_name(f.level));
  std::printf("avx2: %d fma: %d f16c: %d avx512f: %d avx512bw: %d avx512vl: %d avx512bf16: %d\n", f.avx2, f.fma,
              f.f16c, f.avx512f, f.avx512bw, f.avx512vl, f.avx512bf16);
  std::printf("hardware threads: %d\n", ThreadPool::hardware_threads());
}

CommandRegistration registration{{"sysinfo", "Show the CPU features and thread count deepmoe will use",
                                  [](CLI::App& sub) { sub.callback(run_sysinfo); }}};

}  // namespace
}  // namespace deepmoe::tools
