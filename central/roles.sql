-- Sample roles for the central audit store (docs/central.md). Run as the owner of the
-- database after `sfi-central migrate`, e.g.
--   psql -v station=line-1 -v station_role=sfid_line1 -v auditor_role=audit_alice -f roles.sql
-- then give each role a password (\password ROLE), or use certificates (pg_hba.conf cert).
--
-- A station's login role: a member of sfid_station, registered for exactly one station.
-- It can call sfid_central.push() and sfid_central.head() for that station and nothing
-- else: it cannot read other stations, change or delete a record.
CREATE ROLE :"station_role" LOGIN IN ROLE sfid_station;
ALTER ROLE :"station_role" SET statement_timeout = '60s';
SELECT sfid_central.add_station(:'station', :'station_role');

-- An auditor: reads every table and view of sfid_central, writes nothing.
CREATE ROLE :"auditor_role" LOGIN IN ROLE sfid_auditor;
ALTER ROLE :"auditor_role" SET default_transaction_read_only = on;
