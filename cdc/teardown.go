package cdc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// teardownPoll is how often Teardown tries again to drop a slot still held.
const teardownPoll = 20 * time.Millisecond

// Teardown undoes what Setup made for the relay, except the table and its
// rows: it drops the replication slot (waiting, until ctx ends, while a
// replication connection that is closing still holds it) and then the
// publication. Both may be missing. Dropping the slot loses its position:
// a new one sees only later transactions.
func Teardown(ctx context.Context, conn *pgx.Conn, cfg Config) error {
	cfg = cfg.withDefaults()
	for {
		_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "55006" { // object_in_use: the walsender has not let go yet
			if err != nil {
				return fmt.Errorf("drop slot %q: %w", cfg.Slot, err)
			}
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drop slot %q, still in use: %w", cfg.Slot, ctx.Err())
		case <-time.After(teardownPoll):
		}
	}
	if _, err := conn.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgx.Identifier{cfg.Publication}.Sanitize()); err != nil {
		return fmt.Errorf("drop publication %q: %w", cfg.Publication, err)
	}
	return nil
}
