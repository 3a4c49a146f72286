-- Allows the `watch` trigger: a job that a watch session started after a
-- file of the project changed. SQLite cannot change a CHECK constraint in
-- place, so the table is rebuilt: copy, drop, rename, recreate the indexes.
-- `Store::open` runs migrations with foreign keys off, so dropping the old
-- table deletes no tasks, steps or artifacts through `ON DELETE CASCADE`.
-- Their `REFERENCES jobs (id)` name the new table once it is renamed.

CREATE TABLE jobs_with_watch (
    id           TEXT    NOT NULL PRIMARY KEY,
    pipeline     TEXT    NOT NULL,
    project_dir  TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN (
                     'pending', 'scheduling', 'running',
                     'success', 'failure', 'timeout', 'cancelled')),
    reason       TEXT,
    trigger_type TEXT    NOT NULL CHECK (trigger_type IN ('webhook', 'cron', 'manual', 'local', 'watch')),
    -- For `watch`, the path of the changed file relative to the project.
    trigger_ref  TEXT    NOT NULL,
    repo         TEXT    NOT NULL,
    branch       TEXT    NOT NULL,
    commit_sha   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    CHECK (finished_at IS NULL OR state IN ('success', 'failure', 'timeout', 'cancelled'))
) STRICT;

INSERT INTO jobs_with_watch (
    id, pipeline, project_dir, state, reason, trigger_type, trigger_ref,
    repo, branch, commit_sha, created_at, started_at, finished_at)
SELECT
    id, pipeline, project_dir, state, reason, trigger_type, trigger_ref,
    repo, branch, commit_sha, created_at, started_at, finished_at
FROM jobs;

DROP TABLE jobs;
ALTER TABLE jobs_with_watch RENAME TO jobs;

CREATE INDEX jobs_by_created_at ON jobs (created_at, id);
CREATE INDEX jobs_by_pipeline ON jobs (pipeline, created_at);
CREATE INDEX jobs_by_state ON jobs (state, created_at);
