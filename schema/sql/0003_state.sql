-- outbox-relay schema version 3: the relay's state, next to the outbox table.
-- One row per replication slot: the newest confirmed horizon (see
-- schema.Horizon). The relay's role needs SELECT, INSERT and UPDATE on it.
-- {{state_table}} is replaced with the quoted name.
CREATE TABLE IF NOT EXISTS {{state_table}} (
    slot_name        text        PRIMARY KEY,
    horizon_snapshot pg_snapshot NOT NULL,
    horizon_lsn      pg_lsn      NOT NULL,
    horizon_time     timestamptz NOT NULL,
    confirmed_lsn    pg_lsn      NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
