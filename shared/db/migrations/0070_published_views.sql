-- Issue 14 (each service owns its tables): what an owner publishes for another part to read.
--
-- A part's SQL names only its own tables (docs/architecture.md, "Who owns which table") and the
-- views below, each named `<table>_for_<reader>` and created by the table's owner. A change
-- to a table that would break a reader is refused by PostgreSQL while a view depends on the
-- column, instead of breaking the reader silently; the owner then changes the view with it.

-- The gateway (device_gateway with its device registry) owns `devices`.
CREATE OR REPLACE VIEW devices_for_coordinator AS SELECT * FROM devices;  -- also writes last_result through it
CREATE OR REPLACE VIEW devices_for_backup AS SELECT * FROM devices;
CREATE OR REPLACE VIEW devices_for_console AS SELECT * FROM devices;
-- a branch-scoped reader of the log sees the records of its branches' devices
CREATE OR REPLACE VIEW devices_for_audit AS SELECT device_id, branch_id FROM devices;

-- The coordinator owns clear_requests, device_clears, fleet_operations and bureau_views.
CREATE OR REPLACE VIEW clear_requests_for_console AS SELECT * FROM clear_requests;
CREATE OR REPLACE VIEW clear_requests_for_backup AS SELECT * FROM clear_requests;
CREATE OR REPLACE VIEW clear_requests_for_notify AS SELECT request_id, branch_id, period FROM clear_requests;
CREATE OR REPLACE VIEW device_clears_for_console AS SELECT * FROM device_clears;
CREATE OR REPLACE VIEW device_clears_for_backup AS SELECT * FROM device_clears;
-- the registry refuses to retire a device while a clear of it runs
CREATE OR REPLACE VIEW device_clears_for_gateway AS SELECT request_id, device_id, outcome FROM device_clears;
CREATE OR REPLACE VIEW fleet_operations_for_console AS SELECT * FROM fleet_operations;
CREATE OR REPLACE VIEW bureau_views_for_console AS SELECT * FROM bureau_views;

-- The backup service owns backups (the console's period report names each device's backup).
CREATE OR REPLACE VIEW backups_for_console AS SELECT * FROM backups;

-- The bureau simulator owns authority_clock: the emulated fleet's date the console counts from.
CREATE OR REPLACE VIEW authority_clock_for_console AS SELECT * FROM authority_clock;
