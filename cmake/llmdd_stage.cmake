# Stages the cargo-built libllmdd.so as the library CMake builds against and
# installs: <dir>/libllmdd.so.X.Y.Z with the SONAME link libllmdd.so.X and the
# development link libllmdd.so. With objcopy, the DWARF goes to
# libllmdd.so.X.Y.Z.debug (linked by .gnu_debuglink) and the staged library
# keeps only its symbol table. Runs only when the cargo output is newer.
#   cmake -DSRC=<cargo lib> -DDIR=<stage dir> -DREAL=<real name> -DSONAME=<soname>
#         [-DOBJCOPY=<objcopy>] -P llmdd_stage.cmake
set(dst "${DIR}/${REAL}")
if(EXISTS "${dst}" AND NOT "${SRC}" IS_NEWER_THAN "${dst}")
  return()
endif()
file(MAKE_DIRECTORY "${DIR}")
if(OBJCOPY)
  execute_process(COMMAND "${OBJCOPY}" --only-keep-debug "${SRC}" "${dst}.debug" RESULT_VARIABLE r1)
  execute_process(COMMAND "${OBJCOPY}" --strip-debug "--add-gnu-debuglink=${dst}.debug" "${SRC}" "${dst}.tmp"
                  RESULT_VARIABLE r2)
  if(NOT r1 EQUAL 0 OR NOT r2 EQUAL 0)
    message(FATAL_ERROR "objcopy failed splitting the debug info of ${SRC}")
  endif()
  file(RENAME "${dst}.tmp" "${dst}")
else()
  file(COPY_FILE "${SRC}" "${dst}")
endif()
file(CREATE_LINK "${REAL}" "${DIR}/${SONAME}" SYMBOLIC)
file(CREATE_LINK "${SONAME}" "${DIR}/libllmdd.so" SYMBOLIC)
