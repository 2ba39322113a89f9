# ctest driver (same logits for 1, 2 and 4 ranks): generates a tiny random checkpoint, runs
# `deepmoe logits` in one process and under `mpirun -np N` for each N in NPS, and requires identical output.
# RUN_ARGS (optional) are added to the mpirun runs only (e.g. redundant experts, a live rebalance), so they are
# compared with the plain single-process run. With TRACE set, each mpirun run also writes --trace TRACE, which
# must hold compute and communication spans of both micro-batches.
if(NOT EXISTS ${MODEL_DIR}/config.json)
  execute_process(COMMAND ${TOOL} gen-model --preset tiny --seed 7 --tokenizer "" --out ${MODEL_DIR}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "gen-model failed: ${out}${err}")
  endif()
endif()
set(args logits -m ${MODEL_DIR} --threads 1 --gemm ${GEMM}
    --format digest --ids 0,5,9,400,3 --ids 0,77,78 --ids 0,1,2,3,4,5,6 --ids 0,300)
execute_process(COMMAND ${TOOL} ${args} RESULT_VARIABLE rc OUTPUT_VARIABLE reference ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR reference STREQUAL "")
  message(FATAL_ERROR "deepmoe logits failed (${rc}): ${err}")
endif()
message("one process:\n${reference}")
foreach(np IN LISTS NPS)
  math(EXPR np_last "${np} - 1")  # the last rank's spans must be in the trace too
  set(run_args ${RUN_ARGS})
  if(TRACE)
    file(REMOVE ${TRACE})
    list(APPEND run_args --trace ${TRACE})
  endif()
  execute_process(COMMAND ${MPIRUN} -np ${np} ${TOOL} ${args} ${run_args} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err TIMEOUT 300)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "mpirun -np ${np} deepmoe logits failed (${rc}): ${err}")
  endif()
  if(NOT out STREQUAL reference)
    message(FATAL_ERROR "mpirun -np ${np} prints different logits:\n${out}")
  endif()
  if(TRACE)
    file(READ ${TRACE} trace_json)
    foreach(want "\"traceEvents\"" "\"name\":\"attention\"" "\"name\":\"experts\"" "\"name\":\"dispatch\""
            "\"name\":\"combine\"" "\"micro_batch\":1" "\"pid\":${np_last}")
      string(FIND "${trace_json}" "${want}" at)
      if(at EQUAL -1)
        message(FATAL_ERROR "mpirun -np ${np}: the trace ${TRACE} has no ${want}")
      endif()
    endforeach()
  endif()
  message("mpirun -np ${np}: identical")
endforeach()
