#!/usr/bin/env bash
# Build lantern with `--features cuda` on a machine without a GPU or a CUDA install (Debian, PyPI
# reachable): CUDA 13.0's nvcc, headers and libraries from NVIDIA's PyPI wheels into a prefix, a
# link stub for the driver library (libcuda.so.1 comes with the GPU machine's driver), then the
# binaries, stripped:
#   target/cuda/release/lantern      the CLI
#   target/cuda/bin/lantern          the same, and the two below
#   target/cuda/bin/it               the integration tests (`cargo test --release --features cuda --no-run`)
#   target/cuda/bin/device           the device benchmark (benches/device.rs)
#   target/cuda/gpu-bins.tar.xz      target/cuda/bin in one archive: what goes to the GPU machine
# At run time the binaries load libcuda.so.1 (the driver, for CUDA 13: ≥ 580), libcudart.so.13,
# libcublas.so.13 (with its libcublasLt.so.13) and libcurand.so.10 of any CUDA 13.x through the
# dynamic loader (scripts/gpu-check.sh finds them and sets LD_LIBRARY_PATH).
#
# Kernels: candle's kernels are PTX for compute_${CUDA_COMPUTE_CAP:-80} (the driver JIT-compiles
# them for the GPU it runs on: sm_80, sm_90 = H100/H200 and newer). Set CUDA_COMPUTE_CAP=90 for
# PTX tied to Hopper (sm_90a) instead.
#
# Environment: LANTERN_CUDA_PREFIX (default ~/.cache/lantern-cuda-13.0) where the toolkit goes;
# CUDA_COMPUTE_CAP (default 80).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

prefix=${LANTERN_CUDA_PREFIX:-$HOME/.cache/lantern-cuda-13.0}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-80}
# CUDA 13.0 (not newer): cudarc 0.19 knows up to 13.4, and libraries of any later 13.x export
# every symbol that a 13.0 build links against.
wheels=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
  nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
)
root=$prefix/pip/nvidia/cu13
stamp=$prefix/.installed-$(echo "${wheels[*]}" | sha256sum | cut -c1-16)

if [ ! -e "$stamp" ]; then
  echo "== installing CUDA 13.0 toolkit wheels into $prefix"
  rm -rf "$prefix"
  mkdir -p "$prefix"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$prefix/pip" "${wheels[@]}"
  # The linker wants unversioned names; the wheels ship only the versioned sonames.
  for lib in cudart cublas cublasLt curand nvrtc; do
    so=$(cd "$root/lib" && ls lib$lib.so.* | sort | head -1)
    ln -sf "$so" "$root/lib/lib$lib.so"
  done
  touch "$stamp"
fi
export PATH=$root/bin:$PATH
export CUDA_HOME=$root
nvcc --version | tail -2

# The driver library is not on PyPI: link against a stub with its soname that defines the driver
# API's functions as cudarc declares them (as the toolkit's own lib/stubs/libcuda.so does); the
# real libcuda.so.1 of the GPU machine's driver is loaded at run time.
cargo fetch --quiet
cudarc=$(cargo metadata --format-version 1 --features cuda 2>/dev/null | python3 -c '
import json, sys, os
m = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"] == "cudarc"))')
mkdir -p "$root/lib/stubs"
grep -oE 'pub unsafe fn cu[A-Za-z0-9_]+' "$cudarc/src/driver/sys/mod.rs" | awk '{print "void " $4 "(void) {}"}' | sort -u \
  >"$prefix/libcuda-stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" "$prefix/libcuda-stub.c"

export CARGO_TARGET_DIR=$PWD/target/cuda
strip=(--config 'profile.release.strip=true')
echo "== cargo build --release --features cuda"
cargo build --release --features cuda "${strip[@]}"
echo "== cargo test --release --features cuda --no-run"
tests=$(cargo test --release --features cuda "${strip[@]}" --no-run --message-format json --test it |
  python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "it" and m.get("executable"):
        print(m["executable"])')
echo "== cargo bench --features cuda --no-run --bench device"
bench=$(cargo bench --features cuda "${strip[@]}" --no-run --message-format json --bench device |
  python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "device" and m.get("executable"):
        print(m["executable"])')
mkdir -p target/cuda/bin
cp target/cuda/release/lantern target/cuda/bin/lantern
cp "$tests" target/cuda/bin/it
cp "$bench" target/cuda/bin/device
strip target/cuda/bin/*
# One archive for the GPU machine: the three binaries share candle's kernels (about 47 MB each)
# and most of their code, which xz stores once within its 256 MiB window.
echo "== target/cuda/gpu-bins.tar.xz"
tar -C target/cuda -cf - bin | xz -T1 --lzma2=preset=9,dict=256MiB >target/cuda/gpu-bins.tar.xz

echo "== built in $(($(date +%s) - start)) s (CUDA 13.0, PTX for compute_$CUDA_COMPUTE_CAP)"
ls -l target/cuda/bin target/cuda/gpu-bins.tar.xz
mib() { awk "BEGIN { printf \"%.1f\", $1 / 1048576 }"; }
repo=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
archive=$(stat -c %s target/cuda/gpu-bins.tar.xz)
echo "repository (tracked files) $(mib "$repo") MiB + target/cuda/gpu-bins.tar.xz $(mib "$archive") MiB = $(mib $((repo + archive))) MiB (64 MiB can go to a GPU machine; scripts/gpu-check.sh unpacks it)"
