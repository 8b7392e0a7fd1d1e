-- outbox-relay schema version 2: outbox_emit, the table-less outbox.
-- {{schema}} is replaced with the outbox table's schema, quoted.
-- outbox_emit writes one outbox event as a transactional logical decoding
-- message with the prefix 'outbox' instead of a row: the relay publishes it
-- if and only if the calling transaction commits, in its place among the
-- transaction's outbox rows. It returns the event's new ID. A relay run with
-- another --message-prefix needs pg_logical_emit_message called with that
-- prefix, or schema.Outbox{MessagePrefix: ...}.Emit in Go.
CREATE OR REPLACE FUNCTION {{schema}}.outbox_emit(
    aggregate_type text,
    aggregate_id   text,
    event_type     text,
    payload        jsonb,
    headers        jsonb DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql VOLATILE
AS $emit$
DECLARE
    event_id uuid := pg_catalog.gen_random_uuid();
BEGIN
    IF aggregate_type IS NULL OR aggregate_id IS NULL OR event_type IS NULL OR payload IS NULL THEN
        RAISE EXCEPTION 'outbox_emit: aggregate_type, aggregate_id, event_type and payload must not be NULL'
            USING ERRCODE = 'not_null_violation';
    END IF;
    IF aggregate_id = '' THEN
        RAISE EXCEPTION 'outbox_emit: aggregate_id must not be empty: it is the Kafka key'
            USING ERRCODE = 'check_violation';
    END IF;
    IF headers IS NOT NULL AND pg_catalog.jsonb_typeof(headers) <> 'object' THEN
        RAISE EXCEPTION 'outbox_emit: headers must be a JSON object or NULL, not a JSON %', pg_catalog.jsonb_typeof(headers)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_catalog.pg_logical_emit_message(true, 'outbox', pg_catalog.jsonb_build_object(
        'id', event_id,
        'aggregate_type', aggregate_type,
        'aggregate_id', aggregate_id,
        'event_type', event_type,
        'payload', payload,
        'headers', headers)::text);
    RETURN event_id;
END
$emit$;
