-- Project folders the desktop app opened, most recent first in its picker.
-- `path` is the canonical absolute path; `pipeline` the one last chosen
-- when the file defines several.
CREATE TABLE recent_projects (
    path      TEXT    NOT NULL PRIMARY KEY,
    pipeline  TEXT,
    opened_at INTEGER NOT NULL
) STRICT;

CREATE INDEX recent_projects_by_opened_at ON recent_projects (opened_at);
