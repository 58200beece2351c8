#!/usr/bin/env bash
# Parse-checks every T-SQL statement under sql/ (schema scripts batch by batch, sql/queries/ block
# by block) with sqlfluff's tsql dialect; see sql/check.py for the rules on what the parser cannot
# read. Exits non-zero on any statement that fails to parse and is not covered by an explicit rule.
#
# sqlfluff and its dependencies are pinned in sql/requirements-check.txt and installed once into a
# virtual environment under $HARTONOMOUS_CACHE (default ~/.cache/hartonomous); later runs reuse it
# and need no network. Options are passed on to check.py (--list: every block and its parameters).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"

SQLFLUFF_VERSION=4.5.0
sql_dir="$HARTONOMOUS_ROOT/sql"
requirements="$sql_dir/requirements-check.txt"
venv="$HARTONOMOUS_CACHE/sql-check/sqlfluff-$SQLFLUFF_VERSION"
stamp="$venv/.requirements.sha256"

# The venv is reused only when it was built from this exact requirements file and still imports.
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] \
  || ! "$venv/bin/python" -c "import sqlfluff, sys; sys.exit(sqlfluff.__version__ != '$SQLFLUFF_VERSION')" 2>/dev/null; then
  command -v python3 >/dev/null 2>&1 || die "python3 (with venv and pip) is needed to install sqlfluff"
  log "installing sqlfluff $SQLFLUFF_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements" \
    || die "pip could not install $requirements from PyPI"
  printf '%s\n' "$want" >"$stamp"
fi

exec "$venv/bin/python" "$sql_dir/check.py" "$sql_dir" "$@"
