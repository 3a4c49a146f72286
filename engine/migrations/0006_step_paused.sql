-- Time a step spent paused in the debugger while it counted toward its run
-- (before it ran, or between a failure and its retry), in milliseconds. Its
-- duration leaves this out.
ALTER TABLE steps ADD COLUMN paused_ms INTEGER NOT NULL DEFAULT 0 CHECK (paused_ms >= 0);
