-- outbox-relay schema version 3: the relay's state, next to the outbox table.
-- One row per replication slot: the newest confirmed horizon, and when a
-- recovery of the slot began and has not ended (the relay's package
-- internal/state reads and writes them). The relay's role needs SELECT,
-- INSERT and UPDATE on it. {{state_table}} is replaced with the quoted name.
CREATE TABLE IF NOT EXISTS {{state_table}} (
    slot_name        text        PRIMARY KEY,
    horizon_snapshot pg_snapshot NULL,
    horizon_lsn      pg_lsn      NULL,
    horizon_time     timestamptz NULL,
    confirmed_lsn    pg_lsn      NULL,
    recovery_started timestamptz NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
