# Benchmarks: build the tools (bench/CMakeLists.txt) and run the runner's
# smoke mode (about 40 s, tiny loads) so the harness cannot rot. The full
# run (bench/run.sh) is not part of the test suite: see BENCHMARKS.md.
add_subdirectory(${CMAKE_SOURCE_DIR}/bench ${CMAKE_BINARY_DIR}/bench)

find_program(SLUICE_BENCH_NODE node)
find_program(SLUICE_BENCH_LUA lua5.4)
find_program(SLUICE_BENCH_KCAT kcat)
if(SLUICE_BENCH_NODE AND SLUICE_BENCH_LUA AND SLUICE_BENCH_KCAT AND "lua5.4" IN_LIST SLUICE_LUAS)
  add_test(NAME bench.smoke
    COMMAND bash ${CMAKE_SOURCE_DIR}/bench/run.sh --smoke --build ${CMAKE_BINARY_DIR}
            --out ${CMAKE_BINARY_DIR}/bench-smoke
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(bench.smoke PROPERTIES TIMEOUT 240)
endif()
