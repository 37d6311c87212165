# The rockspec builds and installs a working module and command (offline,
# into a private tree, from a copy of the sources).
find_program(SLUICE_LUAROCKS luarocks)
if(SLUICE_LUAROCKS AND "lua5.4" IN_LIST SLUICE_LUAS)
  add_test(NAME package.rockspec
    COMMAND bash ${CMAKE_SOURCE_DIR}/tools/check-rockspec.sh ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR}/rockspec-check)
  set_tests_properties(package.rockspec PROPERTIES TIMEOUT 300)
endif()
