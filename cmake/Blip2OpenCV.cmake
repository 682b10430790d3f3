# Imports the three OpenCV libraries we use as blip2::opencv. Debian's small
# packages (libopencv-{core,imgproc,imgcodecs}-dev) ship neither a CMake config
# nor a pkg-config file, so look for the headers and libraries directly.
find_path(BLIP2_OPENCV_INCLUDE_DIR opencv2/core.hpp PATH_SUFFIXES opencv4 REQUIRED)
add_library(blip2_opencv INTERFACE)
add_library(blip2::opencv ALIAS blip2_opencv)
target_include_directories(blip2_opencv SYSTEM INTERFACE ${BLIP2_OPENCV_INCLUDE_DIR})
foreach(_module core imgproc imgcodecs)
  find_library(BLIP2_OPENCV_${_module} opencv_${_module} REQUIRED)
  target_link_libraries(blip2_opencv INTERFACE ${BLIP2_OPENCV_${_module}})
endforeach()
