-- outbox-relay schema version 1: the outbox table.
-- {{table}} and the {{column}} names are replaced with quoted identifiers.
CREATE TABLE IF NOT EXISTS {{table}} (
    {{id}}             uuid        PRIMARY KEY,
    {{aggregate_type}} text        NOT NULL,
    {{aggregate_id}}   text        NOT NULL,
    {{event_type}}     text        NOT NULL,
    {{payload}}        jsonb       NOT NULL,
    {{headers}}        jsonb       NULL,
    {{created_at}}     timestamptz NOT NULL DEFAULT now()
);
