-- netman policy store, version 2: a change log, so replicas follow changes in O(changes)
-- instead of re-reading every policy.
--
-- Every version the triggers produce gets exactly one row here, written by the same
-- statement trigger in the same transaction: the policies that statement added or removed
-- (with both tags, as the internal API shows them), or no policies for a statement that
-- only added or removed groups. Versions are consecutive (the UPDATE of store_meta holds
-- its row lock until commit, and a rolled-back version is issued again), so a reader that
-- holds version V and finds rows V+1..W is complete; a missing row means the log was
-- pruned past it, and the reader loads everything instead.
CREATE TABLE policy_changes (
    version    bigint PRIMARY KEY,
    -- true: these policies were added; false: removed; null: only groups changed.
    added      boolean,
    source_ids text[] COLLATE "C" NOT NULL DEFAULT '{}',
    source_tags integer[] NOT NULL DEFAULT '{}',
    dest_ids   text[] COLLATE "C" NOT NULL DEFAULT '{}',
    dest_tags  integer[] NOT NULL DEFAULT '{}',
    protocols  text[] NOT NULL DEFAULT '{}',
    start_ports integer[] NOT NULL DEFAULT '{}',
    end_ports  integer[] NOT NULL DEFAULT '{}'
);

-- The log keeps the last 10,000 versions: hours of ordinary churn. A replica further
-- behind (down for longer, or a huge import) reloads everything, which it would have
-- to do for that many changes anyway.
CREATE OR REPLACE FUNCTION netman_count_changes() RETURNS trigger LANGUAGE plpgsql AS $$
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
        -- On INSERT the rows' groups and destinations exist; on DELETE they still do
        -- (the store removes unused ones in later statements).
        INSERT INTO policy_changes (version, added, source_ids, source_tags, dest_ids, dest_tags,
                                    protocols, start_ports, end_ports)
        SELECT v, TG_OP = 'INSERT',
               array_agg(c.source_id), array_agg(sg.tag), array_agg(d.group_id), array_agg(dg.tag),
               array_agg(d.protocol), array_agg(d.start_port), array_agg(d.end_port)
        FROM changed c
        JOIN destinations d ON d.id = c.destination_id
        JOIN groups sg ON sg.id = c.source_id
        JOIN groups dg ON dg.id = d.group_id;
    ELSE
        UPDATE store_meta SET groups = groups + n, version = version + 1 RETURNING version INTO v;
        INSERT INTO policy_changes (version) VALUES (v);
    END IF;
    DELETE FROM policy_changes WHERE version <= v - 10000;
    PERFORM pg_notify('netman_policies', v::text);
    RETURN NULL;
END
$$;
