#!/usr/bin/env bash
# Superset for compose's `superset` profile: metadata database, admin user, then the
# bundle in dashboards/ (the Trino database `lake`, datasets on lake's gold tables,
# the seed's three dashboards), then the web server. Every step tolerates a second
# start: an existing admin is kept, and objects already imported are left as they are.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
superset db upgrade
superset fab create-admin --username admin --firstname lake --lastname admin \
    --email admin@localhost --password "${SUPERSET_ADMIN_PASSWORD}" || true
superset init
# The importer wants a zip whose entries share one top-level folder.
python - "$here/dashboards" /tmp/lake-dashboards.zip <<'PY'
import os, sys, zipfile
source, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(target, "w") as bundle:
    for folder, _, files in os.walk(source):
        for name in files:
            path = os.path.join(folder, name)
            bundle.write(path, os.path.join("lake_dashboards", os.path.relpath(path, source)))
PY
superset import-dashboards --path /tmp/lake-dashboards.zip --username admin
exec gunicorn --bind 0.0.0.0:8088 --workers 2 --timeout 120 "superset.app:create_app()"
