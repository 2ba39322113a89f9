# ctest driver: runs COMMAND (a ;-list), and passes only when it exits non-zero, prints output matching REGEX,
# and ends within LIMIT_S seconds (a dead or silent rank ends the job with a message within 30 s).
string(TIMESTAMP start "%s")
# stderr first: the injected-fault line is printed before mpirun reports the death.
execute_process(COMMAND ${COMMAND} RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err
                TIMEOUT 120)
string(TIMESTAMP stop "%s")
math(EXPR elapsed "${stop} - ${start}")
message("exit status: ${status}; ${elapsed} s\n--- stdout\n${out}\n--- stderr\n${err}")
if(status EQUAL 0)
  message(FATAL_ERROR "the job exited with status 0 although a rank failed")
endif()
if(NOT "${err}${out}" MATCHES "${REGEX}")
  message(FATAL_ERROR "no message matching '${REGEX}'")
endif()
if(elapsed GREATER ${LIMIT_S})
  message(FATAL_ERROR "the job took ${elapsed} s to end, more than ${LIMIT_S} s")
endif()
