# The rockspec builds and installs a working module and command (offline,
# into a private tree, from a copy of the sources).
find_program(SLUICE_LUAROCKS luarocks)
# One install per Lua the project claims.
if(SLUICE_LUAROCKS)
  foreach(variant lua5.4 lua5.1 luajit)
    if(variant IN_LIST SLUICE_LUAS)
      add_test(NAME package.rockspec.${variant}
        COMMAND bash ${CMAKE_SOURCE_DIR}/tools/check-rockspec.sh ${CMAKE_SOURCE_DIR}
                ${CMAKE_BINARY_DIR}/rockspec-check-${variant} ${variant})
      set_tests_properties(package.rockspec.${variant} PROPERTIES TIMEOUT 300)
    endif()
  endforeach()
endif()
