#!/usr/bin/env bash
# Superset for compose's `superset` profile: metadata database, admin user, then the
# bundle in dashboards/ (the Trino database `lake`, datasets on lake's gold tables,
# the seed's three dashboards), then the web server. Every step tolerates a second
# start: an existing admin is kept, and objects already imported are left as they are.
#
# Settings (environment):
#   SUPERSET_ADMIN_PASSWORD  the admin's password (required)
#   LAKE_SUPERSET_TRINO      where the bundle's database points, default
#                            trino://lake@trino:8080 (compose's Trino); the catalog
#                            iceberg_catalog is kept
#   SUPERSET_BIND            gunicorn's address, default 0.0.0.0:8088
#   SUPERSET_WORKERS         gunicorn workers, default 2
# tests/superset.rs runs this script as it is shipped, against the test Trino.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${SUPERSET_ADMIN_PASSWORD:?set SUPERSET_ADMIN_PASSWORD}"
# Superset's image sets this; a venv install does not.
export FLASK_APP=${FLASK_APP:-superset}
superset db upgrade
superset fab create-admin --username admin --firstname lake --lastname admin \
    --email admin@localhost --password "${SUPERSET_ADMIN_PASSWORD}" || true
superset init
# The importer wants a zip whose entries share one top-level folder; the database's
# address is set here, so that the bundle names compose's Trino and nothing else.
bundle=$(mktemp -d)/lake-dashboards.zip
python - "$here/dashboards" "$bundle" "${LAKE_SUPERSET_TRINO:-trino://lake@trino:8080}" <<'PY'
import os, sys, zipfile
source, target, trino = sys.argv[1], sys.argv[2], sys.argv[3].rstrip("/")
shipped = "trino://lake@trino:8080"
with zipfile.ZipFile(target, "w") as bundle:
    for folder, _, files in os.walk(source):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if os.path.basename(folder) == "databases":
                if shipped not in text:
                    sys.exit(f"{path} does not name {shipped}")
                text = text.replace(shipped, trino)
            bundle.writestr(os.path.join("lake_dashboards", os.path.relpath(path, source)), text)
PY
superset import-dashboards --path "$bundle" --username admin
rm -rf "$(dirname "$bundle")"
exec gunicorn --bind "${SUPERSET_BIND:-0.0.0.0:8088}" --workers "${SUPERSET_WORKERS:-2}" \
    --timeout 120 "superset.app:create_app()"
