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
  # browser.NAME runs spec/browser/NAME.test.js; screenshots and logs in OUT.
  function(sluice_browser_test name timeout out)
    add_test(NAME browser.${name}
      COMMAND ${SLUICE_BROWSER_NODE} ${CMAKE_SOURCE_DIR}/spec/browser/${name}.test.js
      WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/spec/browser)
    set_tests_properties(browser.${name} PROPERTIES TIMEOUT ${timeout}
      ENVIRONMENT "SLUICE_BIN=${CMAKE_BINARY_DIR}/bin/sluice-lua5.4;SLUICE_ROOT=${CMAKE_SOURCE_DIR};SLUICE_KCAT=${SLUICE_BROWSER_KCAT};SLUICE_CHROMIUM=${SLUICE_CHROMIUM};SLUICE_OUT=${out}")
  endfunction()
  sluice_browser_test(movies 300 ${CMAKE_BINARY_DIR}/browser)
  # The page over https, its CA trusted in an NSS database (certutil).
  find_program(SLUICE_CERTUTIL certutil)
  if(NOT SLUICE_CERTUTIL)
    message(WARNING "sluice: certutil not found, browser.movies_tls not registered (tools/deps.sh installs libnss3-tools)")
  else()
    sluice_browser_test(movies_tls 180 ${CMAKE_BINARY_DIR}/browser/tls)
  endif()
endif()
