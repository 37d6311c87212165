# The WebSocket/loop C tests and the fuzz corpus replays, again under
# AddressSanitizer + UndefinedBehaviorSanitizer (own build directory, about a
# minute on two cores). Not registered inside a sanitizer build itself.
if(NOT SLUICE_SANITIZE)
  add_test(NAME sanitize.core
    COMMAND bash ${CMAKE_SOURCE_DIR}/spec/tests.d/sanitize.sh ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR}/sanitize)
  set_tests_properties(sanitize.core PROPERTIES TIMEOUT 600)
endif()
