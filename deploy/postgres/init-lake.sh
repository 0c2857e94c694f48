#!/bin/sh
# Run once by the postgres image on an empty data directory: the role and the
# database `lake catalog serve` keeps its state in (catalog/init.sql for a
# server set up by hand). The password comes from LAKE_DB_PASSWORD, which the
# catalog's LAKE_SERVER__DATABASE also uses; psql quotes it, so any character
# is safe here (the URL needs URL-safe ones).
set -eu
: "${LAKE_DB_PASSWORD:?set LAKE_DB_PASSWORD (compose passes it from .env)}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -v password="$LAKE_DB_PASSWORD" <<'SQL'
CREATE ROLE lake LOGIN PASSWORD :'password';
CREATE DATABASE lake_catalog OWNER lake ENCODING 'UTF8' TEMPLATE template0;
SQL
