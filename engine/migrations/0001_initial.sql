-- Danube's schema. Ids are TEXT, timestamps are INTEGER milliseconds since
-- the Unix epoch, and states are stored as their lowercase names.

-- People who can log in to `danube serve`, synced from the config repository.
CREATE TABLE users (
    id            TEXT    NOT NULL PRIMARY KEY,
    email         TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    name          TEXT    NOT NULL DEFAULT '',
    -- bcrypt hash for Dex's static users; NULL for users who log in elsewhere.
    password_hash TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE teams (
    id           TEXT    NOT NULL PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    global_admin INTEGER NOT NULL DEFAULT 0 CHECK (global_admin IN (0, 1)),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE team_members (
    team_id TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (team_id, user_id)
) STRICT;

CREATE INDEX team_members_by_user ON team_members (user_id);

-- Pipelines registered by the server's config sync. Local runs do not need a
-- row here: `jobs.pipeline` is a plain name.
CREATE TABLE pipelines (
    id                   TEXT    NOT NULL PRIMARY KEY,
    name                 TEXT    NOT NULL UNIQUE CHECK (name <> ''),
    repository           TEXT    NOT NULL DEFAULT '',
    script_path          TEXT    NOT NULL DEFAULT 'danubefile.py',
    max_duration_seconds INTEGER CHECK (max_duration_seconds > 0),
    -- The rest of the `Pipeline` document (branch filters, triggers, worker
    -- image and resources) as JSON.
    definition           TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(definition)),
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
) STRICT;

CREATE TABLE pipeline_permissions (
    pipeline_id TEXT NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    team_id     TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    level       TEXT NOT NULL CHECK (level IN ('read', 'write', 'admin')),
    PRIMARY KEY (pipeline_id, team_id)
) STRICT;

CREATE INDEX pipeline_permissions_by_team ON pipeline_permissions (team_id);

CREATE TABLE jobs (
    id           TEXT    NOT NULL PRIMARY KEY,
    pipeline     TEXT    NOT NULL,
    project_dir  TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN (
                     'pending', 'scheduling', 'running',
                     'success', 'failure', 'timeout', 'cancelled')),
    reason       TEXT,
    trigger_type TEXT    NOT NULL CHECK (trigger_type IN ('webhook', 'cron', 'manual', 'local')),
    trigger_ref  TEXT    NOT NULL,
    repo         TEXT    NOT NULL,
    branch       TEXT    NOT NULL,
    commit_sha   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    CHECK (finished_at IS NULL OR state IN ('success', 'failure', 'timeout', 'cancelled'))
) STRICT;

CREATE INDEX jobs_by_created_at ON jobs (created_at, id);
CREATE INDEX jobs_by_pipeline ON jobs (pipeline, created_at);
CREATE INDEX jobs_by_state ON jobs (state, created_at);

CREATE TABLE tasks (
    job_id      TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    -- Names of the tasks this one waits for, as a JSON array of strings.
    needs       TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(needs) AND json_type(needs) = 'array'),
    image       TEXT,
    state       TEXT    NOT NULL CHECK (state IN (
                    'pending', 'running', 'success', 'failure',
                    'skipped', 'timeout', 'cancelled')),
    error       TEXT,
    position    INTEGER NOT NULL CHECK (position >= 0),
    started_at  INTEGER,
    finished_at INTEGER,
    PRIMARY KEY (job_id, name),
    UNIQUE (job_id, position)
) STRICT;

-- AUTOINCREMENT so that a step id is never reused after old jobs are deleted.
CREATE TABLE steps (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    task        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    command     TEXT    NOT NULL,
    image       TEXT,
    state       TEXT    NOT NULL CHECK (state IN (
                    'pending', 'running', 'success', 'failure',
                    'skipped', 'timeout', 'cancelled')),
    exit_code   INTEGER,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER
) STRICT;

CREATE INDEX steps_by_job ON steps (job_id, started_at, id);

-- Encrypted values: `blob` is nonce(12) | ciphertext | tag(16), with `id` and
-- `scope` bound as associated data.
CREATE TABLE secrets (
    id         TEXT    NOT NULL PRIMARY KEY,
    scope      TEXT    NOT NULL CHECK (scope = 'global' OR (scope LIKE 'pipeline:_%')),
    key        TEXT    NOT NULL CHECK (key <> ''),
    blob       BLOB    NOT NULL CHECK (length(blob) >= 28),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (scope, key)
) STRICT;

CREATE TABLE artifacts (
    job_id      TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('file', 'directory')),
    size_bytes  INTEGER NOT NULL CHECK (size_bytes >= 0),
    sha256      TEXT    NOT NULL,
    source_path TEXT    NOT NULL,
    task        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (job_id, name)
) STRICT;

-- API tokens for the CLI and bots; only a hash of the token is stored.
CREATE TABLE api_tokens (
    id           TEXT    NOT NULL PRIMARY KEY,
    user_id      TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    token_hash   TEXT    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    revoked_at   INTEGER
) STRICT;

CREATE INDEX api_tokens_by_user ON api_tokens (user_id);

-- Append-only record of security-relevant actions (secret reads, denials).
CREATE TABLE audit_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    subject TEXT    NOT NULL
) STRICT;

CREATE INDEX audit_events_by_at ON audit_events (at);
CREATE INDEX audit_events_by_action ON audit_events (action, at);

-- Engine-wide values such as the draining flag and the last config sync.
CREATE TABLE settings (
    key        TEXT    NOT NULL PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
