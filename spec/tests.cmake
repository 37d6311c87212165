# Test registration, included from the top-level CMakeLists.txt.

# C unit tests of the core: one program per core/test/test_*.c.
file(GLOB SLUICE_C_TESTS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/core/test/test_*.c)
foreach(src ${SLUICE_C_TESTS})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/core/test)
  target_link_libraries(${name} PRIVATE sluice_core)
  add_test(NAME core.${name} COMMAND ${name})
  set_tests_properties(core.${name} PROPERTIES TIMEOUT 120)
endforeach()
