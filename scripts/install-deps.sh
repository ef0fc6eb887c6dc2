#!/usr/bin/env bash
# Installs every Debian package mixq needs to build, test and run its demo, and
# ONNX Runtime for Node.js (tools/ort), the outside judge of the QDQ exports
# (tests/ort). Idempotent and non-interactive; used by CI, docker/Dockerfile and
# people alike.
#   scripts/install-deps.sh            build + test + demo packages, Node.js + ORT
#   scripts/install-deps.sh --python   also PyTorch/ONNX for regenerating fixtures (never needed at run time)
#   scripts/install-deps.sh --no-ort   without Node.js, ORT, Chromium and the Python client's packages
#                                      (building the server image: no tests)
set -euo pipefail

python=0
ort=1
for arg in "$@"; do
  case "$arg" in
    --python) python=1 ;;
    --no-ort) ort=0 ;;
    *) echo "install-deps: unknown option $arg (--python, --no-ort)" >&2; exit 2 ;;
  esac
done

packages=(
  build-essential cmake pkg-config ca-certificates clang-format-14
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libeigen3-dev libsqlite3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libonnx-dev libcli11-dev zlib1g-dev libzip-dev libssl-dev
  dataset-fashion-mnist libonnx-testdata
)
if ((ort)); then
  # The test-only judges beside ORT: the Python client package (clients/python)
  # and the pipeline gate (examples/pipeline) with Debian's grpcio, and
  # headless Chromium, which renders `mixq report`'s HTML in its test.
  packages+=(python3 python3-grpcio python3-protobuf python3-pil python3-venv python3-pip
    python3-setuptools chromium)
fi
if ((python)); then
  packages+=(python3-torch python3-torchvision python3-onnx python3-numpy libopenblas0-pthread)
fi
# Node.js and npm from Debian, unless both are on PATH already (a nodejs
# from elsewhere, e.g. NodeSource's, bundles npm and conflicts with Debian's).
if ((ort)) && ! { command -v node && command -v npm; } >/dev/null; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
else
  SUDO=""
  if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ((ort)); then
  # onnxruntime-node at the version package-lock.json pins, from the npm
  # registry. --ignore-scripts: its install script fetches CUDA files (and fails
  # offline); the CPU binaries are inside the package.
  ort_dir="$(cd "$(dirname "$0")/../tools/ort" && pwd)"
  wanted="$(node -p "require('$ort_dir/package.json').dependencies['onnxruntime-node']")"
  installed="$(node -p "try { require('$ort_dir/node_modules/onnxruntime-node/package.json').version } catch (e) { '' }")"
  if [[ "$installed" == "$wanted" ]]; then
    echo "install-deps: onnxruntime-node $installed present in tools/ort"
  else
    (cd "$ort_dir" && npm ci --ignore-scripts --no-audit --no-fund)
    echo "install-deps: installed onnxruntime-node $wanted in tools/ort"
  fi
fi
