-- A step that a debugging user retried runs again under the same id; the
-- attempt counts its runs, starting at 1.
ALTER TABLE steps ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1);
