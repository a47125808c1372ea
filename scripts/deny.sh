#!/usr/bin/env bash
# cargo deny, offline: installs cargo-deny once per machine into the cache
# (keyed by version, outside the clone), turns the vendored advisory snapshot
# (.ci/advisory-db) into the git repository cargo deny reads, and checks
# advisories, licences, bans and sources against deny.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.20.2
root="${XDG_CACHE_HOME:-$HOME/.cache}/backstop/cargo-deny-$version"
if [ ! -x "$root/bin/cargo-deny" ]; then
  echo "== installing cargo-deny $version into $root (once per machine)"
  cargo install cargo-deny --version "$version" --locked --root "$root" --quiet
fi

# cargo deny names the folder after a hash of the database URL in deny.toml.
db=target/advisory-dbs/advisory-db-3157b0e258782691
if ! cmp -s .ci/advisory-db/SNAPSHOT "$db/SNAPSHOT" 2>/dev/null; then
  rm -rf "$db"
  mkdir -p "$db"
  cp -R .ci/advisory-db/. "$db/"
  date=$(sed -n 's/^date //p' .ci/advisory-db/SNAPSHOT)
  (
    cd "$db"
    git init -q
    git add -A
    GIT_AUTHOR_DATE="$date" GIT_COMMITTER_DATE="$date" \
      git -c user.name=backstop -c user.email=ci@backstop.invalid commit -q -m "advisory-db snapshot"
  )
fi

# cargo metadata needs every platform's crates (Windows ones too) on disk before going offline.
cargo fetch --locked --quiet
"$root/bin/cargo-deny" --offline check --hide-inclusion-graph advisories licenses bans sources
