-- netman policy store, version 1.
--
-- Group ids are compared and ordered byte-wise (COLLATE "C") so the order the API promises
-- (source id, destination id, protocol, ports) is the same on every server whatever its
-- locale, and so btree comparisons stay cheap.

-- One row of bookkeeping the triggers below keep exact inside every writing transaction.
CREATE TABLE store_meta (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version        bigint  NOT NULL DEFAULT 0,
    policies       bigint  NOT NULL DEFAULT 0 CHECK (policies >= 0),
    groups         bigint  NOT NULL DEFAULT 0 CHECK (groups >= 0),
    -- The highest tag ever issued: tags above it have never been used.
    tag_high_water integer NOT NULL DEFAULT 0 CHECK (tag_high_water >= 0)
);
INSERT INTO store_meta DEFAULT VALUES;

CREATE TABLE groups (
    id     text COLLATE "C" NOT NULL CHECK (id <> '' AND length(id) <= 255),
    type   text NOT NULL DEFAULT 'app' CHECK (type <> '' AND length(type) <= 255),
    -- 3 bytes at most (tag_length 1..3); 0 is never issued.
    tag    integer NOT NULL UNIQUE CHECK (tag BETWEEN 1 AND 16777215),
    -- Set when a client asked for the tag (EnsureTag): such groups outlive their policies.
    pinned boolean NOT NULL DEFAULT false,
    -- INCLUDE (tag): listing every group with its tag is an index-only scan in id order.
    PRIMARY KEY (id) INCLUDE (tag)
);

-- Tags of deleted groups, handed out again only when no never-used tag is left,
-- least recently freed first.
CREATE TABLE free_tags (
    tag       integer PRIMARY KEY CHECK (tag BETWEEN 1 AND 16777215),
    freed_seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE
);

CREATE TABLE destinations (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id   text COLLATE "C" NOT NULL REFERENCES groups (id),
    protocol   text    NOT NULL CHECK (protocol IN ('tcp', 'udp')),
    start_port integer NOT NULL CHECK (start_port BETWEEN 1 AND 65535),
    end_port   integer NOT NULL CHECK (end_port BETWEEN 1 AND 65535),
    CONSTRAINT destinations_port_range CHECK (start_port <= end_port),
    -- Leads with group_id: serves the destination half of the id filter. INCLUDE (id):
    -- All reads destinations in group order from this index alone.
    UNIQUE (group_id, protocol, start_port, end_port) INCLUDE (id)
);

CREATE TABLE policies (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id      text COLLATE "C" NOT NULL REFERENCES groups (id),
    destination_id bigint NOT NULL REFERENCES destinations (id),
    -- Leads with source_id: serves the source half of the id filter.
    UNIQUE (source_id, destination_id)
);
CREATE INDEX policies_destination_id ON policies (destination_id);

-- Every statement that adds or removes policies or groups moves the counters and the
-- version in the same transaction and queues a notification that Postgres delivers only
-- if that transaction commits. Because this happens in the database, it holds for every
-- writer (the store, the seeding helper, an operator's psql); TRUNCATE is not covered.
CREATE FUNCTION netman_count_changes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    v bigint;
BEGIN
    SELECT count(*) INTO n FROM changed;
    IF n = 0 THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        n := -n;
    END IF;
    IF TG_TABLE_NAME = 'policies' THEN
        UPDATE store_meta SET policies = policies + n, version = version + 1 RETURNING version INTO v;
    ELSE
        UPDATE store_meta SET groups = groups + n, version = version + 1 RETURNING version INTO v;
    END IF;
    PERFORM pg_notify('netman_policies', v::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER policies_inserted AFTER INSERT ON policies
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION netman_count_changes();
CREATE TRIGGER policies_deleted AFTER DELETE ON policies
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION netman_count_changes();
CREATE TRIGGER groups_inserted AFTER INSERT ON groups
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION netman_count_changes();
CREATE TRIGGER groups_deleted AFTER DELETE ON groups
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION netman_count_changes();
