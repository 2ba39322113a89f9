# Helpers shared by every folder.

# The layer rule of DESIGN.md §1, checked on every build: a wrong-way include fails the build.
add_custom_target(deepmoe_layer_check ALL
  COMMAND ${CMAKE_COMMAND} -DSRC_DIR=${PROJECT_SOURCE_DIR}/src -DTOOLS_DIR=${PROJECT_SOURCE_DIR}/tools
          -P ${PROJECT_SOURCE_DIR}/cmake/CheckLayers.cmake
  COMMENT "Checking include layering (DESIGN.md §1)")

# deepmoe_library(<name> [DEPS libs...]): a static library from src/<name>/*.cpp.
# Files ending in _avx2.cpp are built for x86-64-v3, _avx512.cpp for x86-64-v4 and _avx512bf16.cpp for x86-64-v4
# with AVX512_BF16 and AVX512_VBMI; they must only be entered
# after a runtime check of core/cpu_features.h.
function(deepmoe_library name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cpp)
  add_library(deepmoe_${name} STATIC ${sources})
  target_include_directories(deepmoe_${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(deepmoe_${name} PUBLIC ${ARG_DEPS})
  foreach(src IN LISTS sources)
    if(src MATCHES "_avx2\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "-march=x86-64-v3")
    elseif(src MATCHES "_avx512bf16\\.cpp$")
      # Entered only when cpu_features() reports AVX512_BF16 and AVX512_VBMI as well.
      set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "-march=x86-64-v4;-mavx512bf16;-mavx512vbmi")
    elseif(src MATCHES "_avx512\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "-march=x86-64-v4;-mavx512bf16")
    endif()
  endforeach()
  add_dependencies(deepmoe_${name} deepmoe_layer_check)
endfunction()
