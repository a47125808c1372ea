#!/usr/bin/env bash
# The step of action.yml: `backstop watch` with the action's inputs
# (one variable per input). watch itself writes its outputs to $GITHUB_OUTPUT
# and its Markdown report to $GITHUB_STEP_SUMMARY (docs/pipelines.md); this
# adds the JSON result's path, and an outcome for a run that never judged.
# Runs the same on a laptop with those variables set.
set -uo pipefail

: "${INPUT_CONFIG:?the config input names backstop.toml}"
: "${GITHUB_OUTPUT:?GITHUB_OUTPUT names the file step outputs go to}"
bin="${INPUT_BACKSTOP:-backstop}"
report="${INPUT_REPORT:-backstop-report.md}"
result="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/backstop-watch-$$.json"

args=(--config "$INPUT_CONFIG" watch --format json --report "$report")
if [ -n "${INPUT_RELEASE:-}" ]; then args+=(--release "$INPUT_RELEASE"); fi
if [ -n "${INPUT_LEDGER:-}" ]; then args+=(--ledger "$INPUT_LEDGER"); fi
if [ -n "${INPUT_POLICY:-}" ]; then args+=(--policy "$INPUT_POLICY"); fi
if [ -n "${INPUT_PACE_MS:-}" ]; then args+=(--pace-ms "$INPUT_PACE_MS"); fi

before=$(wc -l < "$GITHUB_OUTPUT")
"$bin" "${args[@]}" > "$result"
code=$?

# watch writes exit_code, decision (the release's status) and report itself;
# a run that never judged (a configuration or ledger error) writes nothing.
if [ "$(wc -l < "$GITHUB_OUTPUT")" -eq "$before" ]; then
  decision=not_judged
  printf 'exit_code=%s\ndecision=%s\n' "$code" "$decision" >> "$GITHUB_OUTPUT"
else
  decision=$(grep '^decision=' "$GITHUB_OUTPUT" | tail -n 1 | cut -d= -f2-)
fi
echo "result=$result" >> "$GITHUB_OUTPUT"
echo "backstop watch: $decision (exit $code)"

if [ "$code" -ne 0 ] && [ "${INPUT_FAIL_ON_ROLLBACK:-true}" != false ]; then
  exit "$code"
fi
exit 0
