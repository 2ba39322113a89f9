# ctest driver: every model-running command is one job under mpirun. Runs generate (plain and --chat), chat
# driven from stdin, perplexity and logits (a single request) in one process and under `mpirun -np N` for each N
# in NPS, and requires exactly the single-process stdout (one text, one transcript, one set of figures; rank 0
# writes everything). Perplexity's stdout holds only the running and final figures (timings go to stderr).
if(NOT EXISTS ${MODEL_DIR}/config.json)
  execute_process(COMMAND ${TOOL} gen-model --preset tiny --seed 11 --out ${MODEL_DIR}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "gen-model failed: ${out}${err}")
  endif()
endif()
set(work ${MODEL_DIR}-inputs)
file(MAKE_DIRECTORY ${work})
file(WRITE ${work}/chat.txt "Hello there\nAnd a second turn\n")
string(REPEAT "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. " 12 text)
file(WRITE ${work}/text.txt "${text}")

set(common -m ${MODEL_DIR} --threads 1)
set(case_names generate generate_chat chat perplexity logits_one_request)
set(case_generate generate ${common} -p "Once upon a time" -n 12 --seed 1 --temperature 0.8)
set(case_generate_chat generate ${common} --chat -p "Hi" -n 8 --seed 1 --temperature 0)
set(case_chat chat ${common} -n 6 --seed 3 --temperature 0.5)
set(case_perplexity perplexity ${common} -f ${work}/text.txt --ctx 32 --chunks 3)
set(case_logits_one_request logits ${common} --format digest --ids 0,5,9,400,3,17)

foreach(name IN LISTS case_names)
  set(input_args "")
  if(name STREQUAL "chat")
    set(input_args INPUT_FILE ${work}/chat.txt)
  endif()
  execute_process(COMMAND ${TOOL} ${case_${name}} ${input_args} RESULT_VARIABLE rc OUTPUT_VARIABLE reference
                  ERROR_VARIABLE err TIMEOUT 300)
  if(NOT rc EQUAL 0 OR reference STREQUAL "")
    message(FATAL_ERROR "${name}: one process failed (${rc}): ${err}")
  endif()
  foreach(np IN LISTS NPS)
    execute_process(COMMAND ${MPIRUN} -np ${np} ${TOOL} ${case_${name}} ${input_args} RESULT_VARIABLE rc
                    OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 300)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "${name}: mpirun -np ${np} failed (${rc}): ${err}")
    endif()
    if(NOT out STREQUAL reference)
      message(FATAL_ERROR "${name}: mpirun -np ${np} prints\n${out}\ninstead of the single-process\n${reference}")
    endif()
    message("${name}: mpirun -np ${np}: identical")
  endforeach()
endforeach()
