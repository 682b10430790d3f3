# Imports LibTorch from PyTorch's Python wheel as the target blip2::torch.
#
# We do not use find_package(Torch): its config drags in CUDA toolkit discovery
# (and on a machine whose system CUDA differs from the wheel's, links the wrong
# NCCL), and it adds torch's include directory, which bundles protobuf 3.13
# headers, wherever it is linked. This target is linked PRIVATE by the engine
# only; see docs/torch-and-protobuf.md.
set(BLIP2_TORCH_ROOT "" CACHE PATH "Root of the torch Python package (holds include/ and lib/)")
if(NOT BLIP2_TORCH_ROOT)
  find_package(Python3 REQUIRED COMPONENTS Interpreter)
  execute_process(
    COMMAND ${Python3_EXECUTABLE} -c "import os, torch.utils; print(os.path.dirname(os.path.dirname(torch.utils.cmake_prefix_path)))"
    OUTPUT_VARIABLE _torch_root OUTPUT_STRIP_TRAILING_WHITESPACE
    ERROR_QUIET RESULT_VARIABLE _torch_rc)
  if(NOT _torch_rc EQUAL 0 OR NOT EXISTS "${_torch_root}/include")
    message(FATAL_ERROR "LibTorch not found: pip install torch (see scripts/install_deps.sh) or set BLIP2_TORCH_ROOT")
  endif()
  set(BLIP2_TORCH_ROOT "${_torch_root}" CACHE PATH "" FORCE)
endif()
message(STATUS "LibTorch: ${BLIP2_TORCH_ROOT}")

add_library(blip2_torch INTERFACE)
add_library(blip2::torch ALIAS blip2_torch)
target_include_directories(blip2_torch SYSTEM INTERFACE
  ${BLIP2_TORCH_ROOT}/include
  ${BLIP2_TORCH_ROOT}/include/torch/csrc/api/include)
target_compile_definitions(blip2_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=1)
target_link_libraries(blip2_torch INTERFACE
  ${BLIP2_TORCH_ROOT}/lib/libtorch_cpu.so
  ${BLIP2_TORCH_ROOT}/lib/libc10.so)
if(BLIP2_CUDA)
  # Nothing references these libraries directly: they register the CUDA kernels
  # when loaded, so keep them against --as-needed.
  target_link_libraries(blip2_torch INTERFACE
    "-Wl,--no-as-needed,${BLIP2_TORCH_ROOT}/lib/libtorch_cuda.so,${BLIP2_TORCH_ROOT}/lib/libc10_cuda.so,--as-needed")
endif()
target_link_options(blip2_torch INTERFACE "-Wl,-rpath,${BLIP2_TORCH_ROOT}/lib")
