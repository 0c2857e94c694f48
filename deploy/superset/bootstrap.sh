#!/usr/bin/env bash
# Superset for compose's `superset` profile: metadata database, admin user, Trino
# (lake's tables through the `iceberg` catalog) registered as the database `lake`,
# then the web server. Idempotent: every step tolerates a second start.
set -euo pipefail
superset db upgrade
superset fab create-admin --username admin --firstname lake --lastname admin \
    --email admin@localhost --password "${SUPERSET_ADMIN_PASSWORD}" || true
superset init
superset set-database-uri --database_name lake --uri "${TRINO_URI}"
exec gunicorn --bind 0.0.0.0:8088 --workers 2 --timeout 120 "superset.app:create_app()"
