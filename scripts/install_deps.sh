#!/usr/bin/env bash
# Installs everything blip2-serve needs to build and test on Debian 12, as root:
# Debian packages through apt, LibTorch through PyTorch's PyPI wheel.
# Safe to run again: already-installed pieces are skipped by apt and pip.
set -euo pipefail

TORCH_VERSION=2.15.0

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build pkg-config ca-certificates \
  python3 python3-pip \
  libabsl-dev libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc \
  libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev \
  libspdlog-dev nlohmann-json3-dev catch2 zlib1g-dev libssl-dev openssl curl libboost-dev \
  python3-grpcio python3-protobuf python3-yaml prometheus nginx-light \
  clang libclang-rt-14-dev >/dev/null  # clang and libFuzzer: scripts/fuzz.sh

# LibTorch comes from the torch wheel (Debian's libtorch-dev is 1.13, too old).
# Debian's own Python refuses pip installs outside a virtualenv (PEP 668);
# this machine is a build box, so allow it.
export PIP_BREAK_SYSTEM_PACKAGES=1
if ! python3 -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '${TORCH_VERSION}' else 1)" 2>/dev/null; then
  python3 -m pip install --quiet --root-user-action=ignore "torch==${TORCH_VERSION}"
fi
# The official openai package, for the tests of the OpenAI-compatible API.
if ! python3 -c "import openai" 2>/dev/null; then
  python3 -m pip install --quiet --root-user-action=ignore "openai==3.57.0"
fi
python3 -c "import torch; print('LibTorch', torch.__version__, 'at', torch.utils.cmake_prefix_path)"
