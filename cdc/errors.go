package cdc

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// Conditions callers branch on. Errors returned by this package wrap them
// with the details (setting values, names) and what to do.
var (
	// ErrWALLevel reports a server whose wal_level is not logical.
	ErrWALLevel = errors.New("cdc: wal_level must be logical")
	// ErrNoDSN: the Config names no PostgreSQL server.
	ErrNoDSN = errors.New("no PostgreSQL DSN")
	// ErrServerVersion reports a server older than PostgreSQL 14.
	ErrServerVersion = errors.New("cdc: PostgreSQL server too old")
	// ErrNoPublication reports that the publication does not exist.
	ErrNoPublication = errors.New("cdc: publication does not exist")
	// ErrNoTable reports that the outbox table does not exist.
	ErrNoTable = errors.New("cdc: outbox table does not exist")
	// ErrNotPublished reports a publication that does not include the outbox table.
	ErrNotPublished = errors.New("cdc: outbox table is not in the publication")
	// ErrNoInserts reports a publication that does not publish inserts, so
	// that no outbox row would reach the relay.
	ErrNoInserts = errors.New("cdc: the publication does not publish inserts")
	// ErrNoSlot reports that the replication slot does not exist.
	ErrNoSlot = errors.New("cdc: replication slot does not exist")
	// ErrSlotInUse reports a slot streaming to another connection.
	ErrSlotInUse = errors.New("cdc: replication slot is in use by another connection")
	// ErrSlotInvalidated reports a slot whose WAL the server removed.
	ErrSlotInvalidated = errors.New("cdc: replication slot was invalidated")
	// ErrSlotPlugin reports a slot that does not use the pgoutput plugin.
	ErrSlotPlugin = errors.New("cdc: replication slot does not use pgoutput")
	// ErrColumns reports an outbox table whose columns do not match the mapping.
	ErrColumns = errors.New("cdc: outbox table columns do not match the column mapping")
	// ErrRowColumns reports rows in the slot that were written while the
	// outbox table's columns did not match the mapping. PostgreSQL decodes
	// each row with the columns its table had when it was written, so a
	// mapped column renamed and renamed back stops the relay at the rows
	// written in between, on every start. It wraps ErrColumns; the error
	// names the commit position and time of the first such transaction.
	ErrRowColumns = fmt.Errorf("%w: rows in the slot were written with other columns", ErrColumns)
	// ErrSlotLost reports that the slot disappeared after the relay had
	// streamed from it: dropped, or lost in a failover. Events may be lost.
	ErrSlotLost = errors.New("cdc: replication slot disappeared while the relay was running")
	// ErrSlotRecovering reports a slot whose recovery (Recreate) began and
	// has not ended: another relay is republishing the rows the new slot
	// does not hold, or one was stopped while it did. Streaming the slot
	// could skip them.
	ErrSlotRecovering = errors.New("cdc: a recovery of the replication slot began and has not ended")
	// ErrTableChanged reports that the outbox table was dropped, created
	// again or taken out of the publication while the relay ran (Monitor):
	// rows written to it since then may not have been relayed.
	ErrTableChanged = errors.New("cdc: the outbox table changed while the relay ran")
	// ErrSystemChanged reports a reconnect to another server history (system
	// identifier or timeline) than the relay first streamed from.
	ErrSystemChanged = errors.New("cdc: server system identifier or timeline changed while the relay was running")
)

// Refused reports whether PostgreSQL refused err's statement for want of a
// privilege (SQLSTATE 42501, insufficient_privilege), so that the caller
// can name the grant or role the statement needs.
func Refused(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42501"
}
