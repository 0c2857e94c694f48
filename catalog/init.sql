-- Creates the role and the database `lake catalog serve` keeps its state in.
-- Run once as a superuser:  psql -U postgres -f catalog/init.sql
-- The catalog creates its own tables (rustberg_*) on first start.
-- Change the password, then give it to the catalog in LAKE_SERVER__DATABASE.
CREATE ROLE lake LOGIN PASSWORD 'lake-change-me';
CREATE DATABASE lake_catalog OWNER lake ENCODING 'UTF8' TEMPLATE template0;
