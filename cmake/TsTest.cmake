# Helpers to register the three kinds of tests.
#
#   ts_add_unit_test(NAME LIBS lib...)   tests/unit/test-NAME.c, a Check suite, label "unit"
#   ts_add_vm_test(NAME TIMEOUT s COMMAND cmd...)
#        runs cmd as root inside the QEMU guest (tests/vm/run), label "vm"
#   ts_add_fuzz_target(NAME SOURCES src... LIBS lib... [SEEDS dir] [SECONDS s])
#        a libFuzzer target (TS_FUZZ only), run on its seeds for a bounded time, label "fuzz"

function(ts_add_unit_test name)
  cmake_parse_arguments(A "" "" "LIBS;SOURCES" ${ARGN})
  add_executable(test-${name} ${PROJECT_SOURCE_DIR}/tests/unit/test-${name}.c ${A_SOURCES})
  target_link_libraries(test-${name} PRIVATE ${A_LIBS} PkgConfig::CHECK)
  target_include_directories(test-${name} PRIVATE ${PROJECT_SOURCE_DIR})
  add_test(NAME unit-${name} COMMAND test-${name})
  set_tests_properties(unit-${name} PROPERTIES LABELS unit TIMEOUT 300
    ENVIRONMENT "CK_DEFAULT_TIMEOUT=120;TS_SOURCE_DIR=${PROJECT_SOURCE_DIR};TS_BINARY_DIR=${PROJECT_BINARY_DIR}")
endfunction()

function(ts_add_vm_test name)
  cmake_parse_arguments(A "" "TIMEOUT" "COMMAND" ${ARGN})
  if(NOT TS_VM_TESTS)
    return()
  endif()
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 300)
  endif()
  # The runner kills the guest at the timeout; ctest's own limit sits above it.
  math(EXPR ctest_timeout "${A_TIMEOUT} + 120")
  add_test(NAME vm-${name}
    COMMAND ${PROJECT_SOURCE_DIR}/tests/vm/run --cache ${TS_VM_CACHE}
            --timeout ${A_TIMEOUT} -- ${A_COMMAND})
  set_tests_properties(vm-${name} PROPERTIES LABELS vm TIMEOUT ${ctest_timeout}
    RESOURCE_LOCK qemu-guest
    ENVIRONMENT "TS_SOURCE_DIR=${PROJECT_SOURCE_DIR};TS_BINARY_DIR=${PROJECT_BINARY_DIR}")
endfunction()

function(ts_add_fuzz_target name)
  cmake_parse_arguments(A "" "SEEDS;SECONDS" "SOURCES;LIBS" ${ARGN})
  if(NOT TS_FUZZ)
    return()
  endif()
  if(NOT A_SECONDS)
    set(A_SECONDS 30)
  endif()
  add_executable(fuzz-${name} ${A_SOURCES})
  target_compile_options(fuzz-${name} PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz-${name} PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz-${name} PRIVATE ${A_LIBS})
  target_include_directories(fuzz-${name} PRIVATE ${PROJECT_SOURCE_DIR})
  set(corpus ${CMAKE_BINARY_DIR}/fuzz-corpus/${name})
  file(MAKE_DIRECTORY ${corpus})
  add_test(NAME fuzz-${name}
    COMMAND fuzz-${name} -max_total_time=${A_SECONDS} -timeout=10 ${corpus} ${A_SEEDS})
  set_tests_properties(fuzz-${name} PROPERTIES LABELS fuzz TIMEOUT 600)
endfunction()
