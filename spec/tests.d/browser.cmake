# The movies page in headless Chromium (Debian's chromium package, driven by
# playwright-core from spec/browser/node_modules: `npm ci` there, which
# ./test.sh does), against a real gateway and checked with kcat.
# Screenshots and gateway logs: ${CMAKE_BINARY_DIR}/browser/.
find_program(SLUICE_CHROMIUM chromium)
find_program(SLUICE_BROWSER_NODE node)
find_program(SLUICE_BROWSER_KCAT kcat)
if(NOT SLUICE_CHROMIUM OR NOT SLUICE_BROWSER_NODE OR NOT SLUICE_BROWSER_KCAT)
  message(WARNING "sluice: chromium, node or kcat not found, browser test not registered (tools/deps.sh installs them)")
elseif(NOT "lua5.4" IN_LIST SLUICE_LUAS)
  message(STATUS "sluice: no Lua 5.4 gateway, browser test not registered")
else()
  add_test(NAME browser.movies
    COMMAND ${SLUICE_BROWSER_NODE} ${CMAKE_SOURCE_DIR}/spec/browser/movies.test.js
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/spec/browser)
  set_tests_properties(browser.movies PROPERTIES TIMEOUT 300
    ENVIRONMENT "SLUICE_BIN=${CMAKE_BINARY_DIR}/bin/sluice-lua5.4;SLUICE_ROOT=${CMAKE_SOURCE_DIR};SLUICE_KCAT=${SLUICE_BROWSER_KCAT};SLUICE_CHROMIUM=${SLUICE_CHROMIUM};SLUICE_OUT=${CMAKE_BINARY_DIR}/browser")
endif()
