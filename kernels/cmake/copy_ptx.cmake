# copy_ptx.cmake: copies CMake's PTX objects (…/kernels/<family>.cu.ptx or
# <family>.ptx) to ${OUT}/<family>.ptx.
string(REPLACE " " ";" objs "${OBJECTS}")
foreach(obj IN LISTS objs)
  get_filename_component(name "${obj}" NAME)
  string(REGEX REPLACE "\\.cu\\.ptx$|\\.ptx$" "" family "${name}")
  configure_file("${obj}" "${OUT}/${family}.ptx" COPYONLY)
endforeach()
