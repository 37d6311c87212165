# The fuzz targets (fuzz/) built without libFuzzer, replaying their kept
# corpus (fuzz/corpus/<target>/): every input that once found a bug or new
# coverage stays a regression test. Fuzzing itself: fuzz/fuzz.sh (clang).
set(SLUICE_FUZZ_TARGETS ws_url query static_path server jwt)
if("lua5.4" IN_LIST SLUICE_LUAS)
  list(APPEND SLUICE_FUZZ_TARGETS movies_rows)
endif()
foreach(t ${SLUICE_FUZZ_TARGETS})
  add_executable(fuzz_${t}_replay ${CMAKE_SOURCE_DIR}/fuzz/fuzz_${t}.c ${CMAKE_SOURCE_DIR}/fuzz/replay.c)
  target_include_directories(fuzz_${t}_replay PRIVATE ${CMAKE_SOURCE_DIR}/core/src)
  target_link_libraries(fuzz_${t}_replay PRIVATE sluice_core)
  if(t STREQUAL "movies_rows")
    target_include_directories(fuzz_${t}_replay PRIVATE ${LUA_lua5.4_INCLUDE_DIRS})
    target_link_libraries(fuzz_${t}_replay PRIVATE ${LUA_lua5.4_LINK_LIBRARIES})
    target_compile_definitions(fuzz_${t}_replay PRIVATE SLUICE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  endif()
  add_test(NAME fuzz.${t} COMMAND fuzz_${t}_replay ${CMAKE_SOURCE_DIR}/fuzz/corpus/${t})
  set_tests_properties(fuzz.${t} PROPERTIES TIMEOUT 120)
endforeach()
