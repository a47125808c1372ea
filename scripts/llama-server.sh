#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` from the source vendored in the pinned
# llama-cpp-python sdist on PyPI, once per machine: the binary is cached
# outside the clone, keyed by version, so only the first run pays the build
# (about 10 minutes on 2 cores). Prints the binary's path on stdout.
#
# The interop tier of the test suite (tests/suite/interop.rs) serves a
# random-weight model with it; see docs/assessor.md.
set -euo pipefail

version=0.3.36
sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
url=https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-${version}.tar.gz

cache="${XDG_CACHE_HOME:-$HOME/.cache}/backstop/llama-${version}"
bin="$cache/bin/llama-server"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "building llama-server ${version} into $cache (once per machine)" >&2
curl -fsSL --retry 3 -o "$work/src.tar.gz" "$url"
echo "$sha256  $work/src.tar.gz" | sha256sum -c --quiet -
tar xzf "$work/src.tar.gz" -C "$work"
src="$work/llama_cpp_python-${version}/vendor/llama.cpp"

# Static, portable (no -march=native: the cache may outlive this CPU), no
# network at build or run time (no OpenSSL, no prebuilt web UI download).
# -O1: the test model is 0.6 MB, so generation speed does not matter, and
# the lighter optimiser shortens the one-time build on a 2-core CI machine.
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_FLAGS_RELEASE="-O1 -DNDEBUG" -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" \
  -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >&2
cmake --build "$work/build" --target llama-server -j "$(nproc)" >&2

mkdir -p "$cache/bin.tmp"
cp "$work/build/bin/llama-server" "$cache/bin.tmp/"
rm -rf "$cache/bin"
mv "$cache/bin.tmp" "$cache/bin"
echo "$bin"
