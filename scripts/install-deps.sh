#!/usr/bin/env bash
# Installs every Debian package mixq needs to build, test and run its demo.
# Idempotent and non-interactive; used by CI, docker/Dockerfile and people alike.
#   scripts/install-deps.sh            build + test + demo packages
#   scripts/install-deps.sh --python   also PyTorch/ONNX for regenerating fixtures (never needed at run time)
set -euo pipefail

packages=(
  build-essential cmake pkg-config ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libeigen3-dev libsqlite3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libonnx-dev libcli11-dev zlib1g-dev libzip-dev libssl-dev
  dataset-fashion-mnist libonnx-testdata
)
if [[ "${1:-}" == "--python" ]]; then
  packages+=(python3-torch python3-torchvision python3-onnx python3-numpy libopenblas0-pthread)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
