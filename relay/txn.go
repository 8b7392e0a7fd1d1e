package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// Exactly-once delivery (Config.Delivery = DeliveryExactlyOnce) over a
// Transactor Sink.
//
// Events go out in Sink transactions that hold whole PostgreSQL
// transactions: the first event after a commit opens one, and it commits at
// a PostgreSQL commit once it has been open for TransactionInterval (at that
// commit, or from Run's committer once the stream is between transactions),
// with the fence: the end LSN of the last PostgreSQL transaction it holds.
// The position to confirm is the last committed fence, never a position the
// Sink acknowledged inside an open transaction; with no transaction open and
// nothing in flight it follows the server's keepalives as in at-least-once
// mode. On the first session the Relay reads the last committed fence and
// reads past every PostgreSQL transaction whose commit LSN is below it: the
// fence is the end of a transaction whose events are committed, and the
// next transaction's commit record starts at or after it.
//
// txMu serialises the Sink's transaction calls with Publish: the stream's
// goroutine holds it from the Begin of each new PostgreSQL transaction to
// its Commit, and the committer takes it only between them.

// commitTimeout bounds one CommitTxn.
const commitTimeout = 30 * time.Second

// lockTxn is called by Begin for a new PostgreSQL transaction.
func (r *Relay) lockTxn() {
	if r.tx != nil {
		r.txMu.Lock()
	}
}

// openTxn opens a Sink transaction for the event about to be published,
// unless one is open. The stream's goroutine holds txMu.
func (r *Relay) openTxn() error {
	r.mu.Lock()
	open := r.txOpen
	r.mu.Unlock()
	if open {
		return nil
	}
	if err := r.tx.BeginTxn(); err != nil {
		return fmt.Errorf("begin sink transaction: %w", err)
	}
	r.mu.Lock()
	r.txOpen, r.txOpened = true, time.Now()
	r.mu.Unlock()
	return nil
}

// commitTxnAt is called by Commit once the PostgreSQL transaction ending at
// end is in the watermark; it commits the Sink transaction if it is due,
// and releases txMu.
func (r *Relay) commitTxnAt(ctx context.Context, end pglogrepl.LSN) {
	defer r.txMu.Unlock()
	r.mu.Lock()
	r.txEnd = end
	open, due := r.txOpen, r.txDueLocked()
	if !open {
		// Nothing of this transaction went to the Sink.
		r.advanceCommittedLocked()
	}
	r.mu.Unlock()
	if open && due {
		r.commitTxn(ctx, end)
	}
}

// txDueLocked reports whether the open Sink transaction should commit now:
// it has been open for the interval less the last commit's duration, so
// that its first event becomes visible about one interval after it was
// published, not one interval plus a commit. r.mu is held.
func (r *Relay) txDueLocked() bool {
	return time.Since(r.txOpened) >= r.cfg.TransactionInterval-min(r.txCommitTook, r.cfg.TransactionInterval/2)
}

// advanceCommittedLocked moves the committed position to the watermark's
// when no Sink transaction is open and nothing is in flight. r.mu is held.
func (r *Relay) advanceCommittedLocked() {
	if !r.txOpen && r.inflightEvents == 0 && !r.wm.open {
		r.raiseCommittedLocked(r.wm.flushed)
	}
}

// raiseCommittedLocked moves the committed position up to lsn, never down.
// r.mu is held.
func (r *Relay) raiseCommittedLocked(lsn pglogrepl.LSN) {
	if lsn > r.committed {
		r.committed = lsn
	}
}

// commitTxn commits the open Sink transaction with fence end, or fails the
// Relay. Its caller holds txMu.
func (r *Relay) commitTxn(ctx context.Context, end pglogrepl.LSN) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	began := time.Now()
	if err := r.tx.CommitTxn(cctx, end); err != nil {
		r.fail(fmt.Errorf("commit sink transaction with fence %s: %w", end, err))
		return
	}
	r.mu.Lock()
	r.txOpen, r.txCommitTook = false, time.Since(began)
	r.raiseCommittedLocked(end)
	r.mu.Unlock()
}

// commitIfDue commits the open Sink transaction from Run's goroutine when
// it is due and the stream is between PostgreSQL transactions.
func (r *Relay) commitIfDue(ctx context.Context) {
	if !r.txMu.TryLock() {
		return // inside a PostgreSQL transaction: its Commit will see to it
	}
	defer r.txMu.Unlock()
	r.mu.Lock()
	due := r.txOpen && r.err == nil && r.txDueLocked()
	end := r.txEnd
	r.mu.Unlock()
	if due {
		r.commitTxn(ctx, end)
	}
}

// Resume is called by the stream once it holds the slot, before it reads
// anything; start is the slot's confirmed position. Under
// DeliveryExactlyOnce, with no Sink transaction open, it reads the last
// committed fence: the Relay then reads past the transactions it covers and
// may confirm it. It reads it again at every session, since another relay
// may have held the slot meanwhile; with a transaction open it does not
// (reading takes the transactional ID over, which would abort it), and a
// takeover meanwhile fences this relay's next commit instead.
func (r *Relay) Resume(ctx context.Context, start pglogrepl.LSN) error {
	if r.tx == nil {
		return nil
	}
	r.mu.Lock()
	open := r.txOpen
	r.mu.Unlock()
	if open {
		return nil
	}
	fctx, cancel := context.WithTimeout(ctx, commitTimeout)
	defer cancel()
	fence, err := r.tx.ReadFence(fctx)
	if err != nil {
		return fmt.Errorf("read the last committed fence: %w", err)
	}
	r.log.Info("exactly-once: resuming after the last committed fence", "lsn", fence.String(), "slot_lsn", start.String())
	if fence == 0 {
		return nil
	}
	// Transactions committing before the fence are in the Sink already.
	r.replay.readPastBefore(fence)
	r.mu.Lock()
	r.raiseCommittedLocked(fence)
	r.mu.Unlock()
	return nil
}

// drainTxn ends the Sink transaction at shutdown: committed if the stream
// stopped between PostgreSQL transactions, aborted if inside one, whose
// events must not become visible; PostgreSQL sends them again. It runs on
// the stream's goroutine.
func (r *Relay) drainTxn(ctx context.Context) {
	r.mu.Lock()
	inside, failed := r.wm.open, r.err != nil
	r.mu.Unlock()
	if inside {
		// The stream's goroutine holds txMu since that Begin.
		if err := r.tx.AbortTxn(ctx); err != nil {
			r.log.Warn("could not abort the sink transaction of an unfinished PostgreSQL transaction; the broker aborts it on its timeout", "err", err)
		}
		return
	}
	r.txMu.Lock()
	defer r.txMu.Unlock()
	r.mu.Lock()
	open, end := r.txOpen, r.txEnd
	r.mu.Unlock()
	if open && !failed {
		r.commitTxn(ctx, end)
	}
}
