# picket_man.cmake - makes picket.1 by running the built picket:
#
#   cmake -DPICKET=path/to/picket -DOUT=picket.1 [-DEMULATOR=a,b] -P picket_man.cmake
#
# `picket help --man` prints the manual page from the same table as
# `picket help` (proxy/cli/help.c). EMULATOR is CMAKE_CROSSCOMPILING_EMULATOR
# with ';' written as ',' (it runs a cross-built picket). The page is
# written beside OUT and renamed, so a failed run leaves no half page; a
# picket that fails, or prints nothing, fails the build.
if(NOT PICKET OR NOT OUT)
  message(FATAL_ERROR "usage: cmake -DPICKET=... -DOUT=... -P picket_man.cmake")
endif()
string(REPLACE "," ";" emulator "${EMULATOR}")
execute_process(COMMAND ${emulator} ${PICKET} help --man
                OUTPUT_FILE ${OUT}.tmp
                ERROR_VARIABLE err
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  file(REMOVE ${OUT}.tmp)
  message(FATAL_ERROR "picket help --man: exit ${rc}\n${err}")
endif()
file(SIZE ${OUT}.tmp size)
if(size EQUAL 0)
  file(REMOVE ${OUT}.tmp)
  message(FATAL_ERROR "picket help --man printed nothing")
endif()
file(RENAME ${OUT}.tmp ${OUT})
