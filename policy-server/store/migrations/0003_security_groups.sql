-- Cloud Controller's application security groups, synced by the policy server for
-- the agents' GET /networking/v1/internal/security_groups, and the bookkeeping of
-- periodic jobs that one replica at a time runs (the ASG sync, the stale-policy
-- cleanup).

CREATE TABLE security_groups (
    -- The pagination key agents page by (from = id); kept across syncs for a guid, so
    -- an agent paging during a sync neither skips nor repeats an unchanged group.
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    guid            text COLLATE "C" NOT NULL UNIQUE CHECK (guid <> ''),
    name            text NOT NULL,
    -- The rules as the JSON array served (a string in the answer, as silk reads it).
    rules           text NOT NULL,
    staging_default boolean NOT NULL,
    running_default boolean NOT NULL,
    staging_spaces  text[] NOT NULL DEFAULT '{}',
    running_spaces  text[] NOT NULL DEFAULT '{}'
);
-- "Groups of these spaces" is an array overlap (&&), which these indexes serve.
CREATE INDEX security_groups_staging_spaces ON security_groups USING gin (staging_spaces);
CREATE INDEX security_groups_running_spaces ON security_groups USING gin (running_spaces);

-- One row: a digest of the synced groups, so a sync that brings nothing new writes
-- nothing, and a version that moves with every change.
CREATE TABLE security_groups_meta (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    digest    text   NOT NULL DEFAULT '',
    version   bigint NOT NULL DEFAULT 0,
    synced_at timestamptz
);
INSERT INTO security_groups_meta DEFAULT VALUES;

-- When a periodic job last completed, and what it keeps between runs (the ASG sync:
-- CC's last_update it is consistent with).
CREATE TABLE periodic_jobs (
    name     text PRIMARY KEY,
    last_run timestamptz NOT NULL,
    state    text NOT NULL DEFAULT ''
);
