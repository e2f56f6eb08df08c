#!/usr/bin/env bash
# mypy over the packages under the names they install as (plexrec.features, ...). The folders sit
# at the root and are mapped by setuptools' package-dir, which mypy cannot follow, so the check
# runs on a tree of symlinks that mirrors the installed layout.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/plexrec"
ln -s "$repo/plexrec/__init__.py" "$stage/plexrec/__init__.py"
for d in features models training serving cli proto; do ln -s "$repo/$d" "$stage/plexrec/$d"; done
cd "$stage"
"$repo/.venv/bin/mypy" --config-file "$repo/pyproject.toml" --cache-dir "$repo/.mypy_cache" \
    -p plexrec "$@"
