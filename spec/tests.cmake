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

# ---- busted specs ---------------------------------------------------------
# Unit specs (spec/unit) run under every Lua whose module was built; the
# integration specs (spec/integration) start real gateways (sluice-lua5.4),
# one ctest per spec file, and talk to them with the node clients in
# spec/clients and kcat.
find_program(BUSTED busted)
# (semicolons escaped: ENVIRONMENT is itself a list)
set(SLUICE_SPEC_LUA_PATH "${CMAKE_SOURCE_DIR}/scripts/?.lua\\;${CMAKE_SOURCE_DIR}/scripts/?/init.lua\\;${CMAKE_SOURCE_DIR}/spec/?.lua\\;\\;")

if(NOT BUSTED)
  message(STATUS "sluice: busted not found, Lua specs not registered")
else()
  file(GLOB SLUICE_UNIT_SPECS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/spec/unit/*_spec.lua)
  if(SLUICE_UNIT_SPECS)
    foreach(variant lua5.4 luajit lua5.1)
      if(NOT variant IN_LIST SLUICE_LUAS)
        continue()
      endif()
      # The stream-on-Kafka spec (a minute of group joins on the embedded
      # broker) runs as a test of its own, beside the rest.
      add_test(NAME unit.${variant}
        COMMAND ${variant} ${BUSTED} -o TAP --pattern=_spec --exclude-pattern=stream_kafka_spec
                ${CMAKE_SOURCE_DIR}/spec/unit
        WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
      add_test(NAME unit.${variant}.stream_kafka
        COMMAND ${variant} ${BUSTED} -o TAP ${CMAKE_SOURCE_DIR}/spec/unit/stream_kafka_spec.lua
        WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
      set_tests_properties(unit.${variant} unit.${variant}.stream_kafka PROPERTIES TIMEOUT 600
        ENVIRONMENT "LUA_PATH=${SLUICE_SPEC_LUA_PATH};LUA_CPATH=${CMAKE_BINARY_DIR}/lua/${variant}/?.so\\;\\;")
    endforeach()
  endif()

  # Apache Kafka (tools/kafka.sh): one broker, started once for the whole
  # run (a ctest fixture), shared by every spec that calls H.kafka(); specs
  # that take brokers down start clusters of their own (H.start_kafka).
  set(SLUICE_KAFKA_DIR ${CMAKE_BINARY_DIR}/kafka)
  add_test(NAME kafka.start COMMAND bash ${CMAKE_SOURCE_DIR}/tools/kafka.sh start --dir ${SLUICE_KAFKA_DIR})
  set_tests_properties(kafka.start PROPERTIES FIXTURES_SETUP kafka TIMEOUT 300)
  add_test(NAME kafka.stop COMMAND bash ${CMAKE_SOURCE_DIR}/tools/kafka.sh stop --dir ${SLUICE_KAFKA_DIR})
  set_tests_properties(kafka.stop PROPERTIES FIXTURES_CLEANUP kafka TIMEOUT 60)
  set(SLUICE_KAFKA_ENV "SLUICE_KAFKA_FILE=${SLUICE_KAFKA_DIR}/bootstrap;SLUICE_KAFKA_LIBS=${SLUICE_KAFKA_DIR}/libs;SLUICE_PYTHON=${CMAKE_BINARY_DIR}/pyenv/bin/python")

  find_program(SLUICE_NODE node)
  find_program(SLUICE_KCAT kcat)
  file(GLOB SLUICE_INTEGRATION_SPECS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/spec/integration/*_spec.lua)
  if(SLUICE_INTEGRATION_SPECS AND "lua5.4" IN_LIST SLUICE_LUAS)
    if(NOT SLUICE_NODE OR NOT SLUICE_KCAT)
      message(WARNING "sluice: node or kcat not found, integration specs not registered")
    else()
      set(gateways "lua5.4")
      foreach(other luajit lua5.1)
        if(other IN_LIST SLUICE_LUAS)
          list(APPEND gateways ${other})
        endif()
      endforeach()
      foreach(spec ${SLUICE_INTEGRATION_SPECS})
        get_filename_component(name ${spec} NAME_WE)
        string(REGEX REPLACE "_spec$" "" name ${name})
        foreach(gw ${gateways})
          # The other Luas' gateways run the main gateway spec only (the
          # unit specs run the library, streams included, on every Lua).
          set(test integration.${name})
          if(NOT gw STREQUAL "lua5.4")
            if(NOT name STREQUAL "gateway")
              continue()
            endif()
            set(test integration.${name}.${gw})
          endif()
          add_test(NAME ${test}
            COMMAND lua5.4 ${BUSTED} -o TAP ${spec}
            WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
          set_tests_properties(${test} PROPERTIES TIMEOUT 300
            ENVIRONMENT "LUA_PATH=${SLUICE_SPEC_LUA_PATH};LUA_CPATH=${CMAKE_BINARY_DIR}/lua/lua5.4/?.so\\;\\;;SLUICE_BIN=${CMAKE_BINARY_DIR}/bin/sluice-${gw};SLUICE_ROOT=${CMAKE_SOURCE_DIR};SLUICE_CLIENTS=${CMAKE_SOURCE_DIR}/spec/clients;SLUICE_NODE=${SLUICE_NODE};SLUICE_KCAT=${SLUICE_KCAT};${SLUICE_KAFKA_ENV}")
          # Specs on Apache Kafka need the shared broker (or its jars: a
          # cluster of its own fetching them at the same time would race).
          file(STRINGS ${spec} uses_kafka REGEX "[Hh]\\.(start_)?kafka *[({]")
          if(uses_kafka)
            set_tests_properties(${test} PROPERTIES FIXTURES_REQUIRED kafka)
          endif()
        endforeach()
      endforeach()
    endif()
  endif()
endif()

# The three-broker spec starts a cluster and runs six scenarios under load:
# about 3 minutes alone, more on a busy machine, most of it waiting for
# faults to end. Its timeout is a bound for a machine loaded many times over.
if(TEST integration.cluster_faults)
  set_tests_properties(integration.cluster_faults PROPERTIES TIMEOUT 1200)
endif()
# Two reload-under-load runs (a Lua handler, then a declared route): about
# a minute alone; a load average of 49 on the two cores took it past 300 s.
if(TEST integration.reload_load)
  set_tests_properties(integration.reload_load PROPERTIES TIMEOUT 600)
endif()

# Further registrations (browser, benchmarks smoke, packaging…): one file each.
file(GLOB SLUICE_MORE_TESTS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/spec/tests.d/*.cmake)
foreach(f ${SLUICE_MORE_TESTS})
  include(${f})
endforeach()

# Scheduling: ./test.sh runs ctest with eight jobs on two cores. Most specs
# spend their time waiting (consumer-group joins, broker faults to end,
# timeouts): in a profiled run the tests used about a third of the two
# cores (docs/testing.md). Each test takes one job; the ones below drive
# real load (40-55% of a core alone) or compile (both cores) and hold a
# lock, so that no two of a kind run at once (a test needing two of eight
# job slots would wait for two to be free at the same moment, which with
# short tests around happens late: they all ran together at the end).
foreach(t integration.backpressure integration.reload_load integration.shutdown integration.stream)
  if(TEST ${t})
    set_tests_properties(${t} PROPERTIES RESOURCE_LOCK load)
  endif()
endforeach()
foreach(t sanitize.core package.rockspec.lua5.4 package.rockspec.lua5.1 package.rockspec.luajit)
  if(TEST ${t})
    set_tests_properties(${t} PROPERTIES RESOURCE_LOCK compiler)
  endif()
endforeach()
# Longest first: ctest starts the costliest test that fits a free slot (after
# the ones its fixtures order first), and on a fresh clone it has no
# timings of its own, so these are the tests' seconds alone (measured at
# low load; the three-broker spec, the critical path, above all others).
foreach(cost integration.cluster_faults:1000 unit.luajit.stream_kafka:64 unit.lua5.4:62
             integration.stream_eos:61 unit.lua5.1.stream_kafka:59 unit.lua5.4.stream_kafka:58
             unit.luajit:58 unit.lua5.1:57 bench.smoke:55 integration.health:54
             integration.stream:47 browser.movies:43 integration.backpressure:40
             core.test_kafka:35 integration.movies_failure:35 sanitize.core:35
             integration.stream_topics:32 integration.shutdown:32 integration.faults_more:26
             integration.faults:24 integration.idle:22 integration.reload_load:20
             integration.gateway:20 integration.shutdown_kafka:20 package.rockspec.lua5.4:19
             integration.broadcast:18 integration.gateway.luajit:16 integration.gateway.lua5.1:16
             core.test_kafka_close:16)
  string(REPLACE ":" ";" cost ${cost})
  list(GET cost 0 t)
  list(GET cost 1 seconds)
  if(TEST ${t})
    set_tests_properties(${t} PROPERTIES COST ${seconds})
  endif()
endforeach()
