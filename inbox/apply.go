package inbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// rollbackTimeout bounds the rollback of a failed attempt's transaction.
const rollbackTimeout = 5 * time.Second

// outageError is a failure of the database rather than of the record: the
// consumer's own statements failed, or the handler's connection was lost.
// It is retried without limit and never dead-letters the record.
type outageError struct{ err error }

func (e *outageError) Error() string { return e.err.Error() }
func (e *outageError) Unwrap() error { return e.err }

// fatalError stops Run: no record can be applied until a person acts.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// apply makes one attempt at ev: in one transaction it inserts the inbox
// row and, unless the row existed (duplicate true), calls the handler and
// commits. An error is an *outageError, a *fatalError, or the handler's or
// COMMIT's error, to be classified by the caller.
func (c *Consumer) apply(ctx context.Context, ev Event) (duplicate bool, err error) {
	tx, err := c.cfg.DB.Begin(ctx)
	if err != nil {
		return false, &outageError{fmt.Errorf("begin transaction for event %s: %w", ev.ID, err)}
	}
	defer func() {
		if err != nil || duplicate {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
			defer cancel()
			_ = tx.Rollback(rctx) // the error that made us roll back is the one to report
		}
	}()
	var position any
	if ev.Position != "" {
		position = ev.Position
	}
	tag, err := tx.Exec(ctx, c.insertSQL, c.cfg.Name, ev.ID, ev.Topic, ev.Partition, ev.Offset, position)
	if err != nil {
		err = fmt.Errorf("insert event %s into inbox table %s: %w", ev.ID, c.table, err)
		state := sqlState(err)
		switch {
		case state == "42P01": // undefined_table
			return false, &fatalError{tableError(c.table.String(), err)}
		case strings.HasPrefix(state, "42"): // a table not as Setup makes it, or no privilege
			return false, &fatalError{fmt.Errorf("%w; the inbox table must be as inbox.Setup creates it, and the role needs INSERT on it", err)}
		case strings.HasPrefix(state, "22"), strings.HasPrefix(state, "23"), strings.HasPrefix(state, "54"):
			// The record's own values (its id or position) cannot be
			// stored: no attempt will do better.
			return false, Permanent(err)
		case state != "" && !isOutage(err):
			return false, err // counted, like a handler's failure
		}
		return false, &outageError{err}
	}
	if tag.RowsAffected() == 0 {
		return true, nil
	}
	start := time.Now()
	err = c.handler(ctx, tx, ev)
	if err != nil {
		c.metrics.duration.Observe(time.Since(start).Seconds())
		// The transaction is still this attempt's: its connection may be
		// asked. A connection lost under the handler is an outage, unless
		// the handler marked the error permanent or ended it by its own
		// deadline.
		if tx.Conn().IsClosed() && !ownDeadline(err) && !IsPermanent(err) {
			return false, &outageError{err}
		}
		return false, err
	}
	err = tx.Commit(ctx)
	c.metrics.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		err = fmt.Errorf("commit event %s: %w", ev.ID, err)
		// A server's answer means it rolled back: the record's failure.
		// Anything else leaves the outcome unknown, which the inbox row
		// makes safe to retry. (The connection is back in the pool now,
		// not this attempt's to look at.)
		if sqlState(err) == "" && !ownDeadline(err) {
			return false, &outageError{err}
		}
		return false, err
	}
	return false, nil
}

// insertStatement returns the inbox INSERT for table.
func insertStatement(table string) string {
	return `INSERT INTO ` + table + ` (consumer, event_id, topic, "partition", "offset", position)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (consumer, event_id) DO NOTHING`
}

// isOutage reports whether err says the database, not the record, failed:
// an outageError (the consumer's own statements, a connection lost under
// the handler, a COMMIT without an answer), a server shutting down or out
// of connections, a refused connection, or an error pgconn deems safe to
// retry (nothing was sent). A network error of the handler's own (an HTTP
// call, say) is the record's failure, and a Permanent mark wins.
func isOutage(err error) bool {
	var oe *outageError
	if errors.As(err, &oe) {
		return true
	}
	if ownDeadline(err) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection_exception
			pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", // admin_shutdown, crash_shutdown, cannot_connect_now
			pgErr.Code == "53300": // too_many_connections
			return true
		}
		return false
	}
	if IsPermanent(err) {
		return false
	}
	var ce *pgconn.ConnectError
	return pgconn.SafeToRetry(err) || errors.As(err, &ce)
}

// ownDeadline reports whether err comes from a context the handler ended
// itself (its own timeout): the record's failure, counted, not an outage,
// even though pgx closes the connection of a canceled query.
func ownDeadline(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// sqlState returns the SQLSTATE of the PostgreSQL error in err, or "".
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}
