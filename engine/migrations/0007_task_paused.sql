-- Time a task's steps spent paused in the debugger while the task ran, in
-- milliseconds, after a failure too; the task's duration leaves this out.
ALTER TABLE tasks ADD COLUMN paused_ms INTEGER NOT NULL DEFAULT 0 CHECK (paused_ms >= 0);
