-- A department's contact data (the unit_contact mapping): NULL where STS holds none or the
-- mapping is off.
ALTER TABLE departments ADD COLUMN postal_address TEXT;
ALTER TABLE departments ADD COLUMN email          TEXT;
ALTER TABLE departments ADD COLUMN phone          TEXT;
ALTER TABLE departments ADD COLUMN ean            TEXT;
ALTER TABLE departments ADD COLUMN p_number       TEXT;
ALTER TABLE departments ADD COLUMN cvr_number     TEXT;  -- the unit's CVR (the row's cvr is the customer's)
