-- Lease fencing: every claim of a device clear takes the next fencing number, and every write of
-- the coordinator names the owner and the number it holds. A replica whose lease expired and was
-- claimed by another (a database pause longer than the lease) writes nothing more for it.

ALTER TABLE device_clears ADD COLUMN IF NOT EXISTS lease_epoch bigint NOT NULL DEFAULT 0;
