#!/bin/sh
# The sample writer of deploy/compose: once a second, one transaction that
# inserts two events of a new order into the outbox table. Every fifth
# transaction is rolled back: its events never reach Kafka. psql reads its
# connection from PGHOST, PGDATABASE, PGUSER and PGPASSWORD. A failed
# transaction (PostgreSQL restarting) is reported and the loop goes on.
set -u
i=0
while :; do
	i=$((i + 1))
	end=COMMIT
	if [ $((i % 5)) -eq 0 ]; then
		end=ROLLBACK
	fi
	if psql -X -q -v ON_ERROR_STOP=1 <<SQL
BEGIN;
INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload, headers) VALUES
    (gen_random_uuid(), 'order', 'order-$i', 'order_created', '{"id": "order-$i", "amount": $i}', '{"source": "compose-writer"}'),
    (gen_random_uuid(), 'order', 'order-$i', 'order_paid', '{"id": "order-$i"}', NULL);
$end;
SQL
	then
		echo "order-$i: $end"
	else
		echo "order-$i: failed; retrying in a second" >&2
	fi
	sleep 1
done
