package relay

import (
	"time"

	"github.com/jackc/pglogrepl"
)

// watermark tracks transactions in commit order and the newest end LSN below
// which every event is acknowledged. It is not safe for concurrent use; the
// Relay guards it.
type watermark struct {
	// txns holds open and unfinished transactions, oldest first, from head.
	txns []txn
	head int
	// seq is the sequence number of txns[head]; numbers grow by one per
	// transaction, so a transaction is found by seq-headSeq.
	headSeq uint64
	// open reports that the newest transaction has begun but not committed.
	open bool
	// flushed is the confirmed position.
	flushed pglogrepl.LSN
}

type txn struct {
	time      time.Time     // commit time, for the lag in seconds
	end       pglogrepl.LSN // zero until committed
	pending   int           // events published and not yet acknowledged
	committed bool
}

// begin opens a transaction and returns its sequence number.
func (w *watermark) begin() uint64 {
	w.txns = append(w.txns, txn{})
	w.open = true
	return w.headSeq + uint64(len(w.txns)-w.head-1)
}

// stamp records the commit time of transaction seq.
func (w *watermark) stamp(seq uint64, t time.Time) { w.at(seq).time = t }

// oldest returns the commit time of the oldest transaction not yet flushed,
// or the zero time when there is none.
func (w *watermark) oldest() time.Time {
	if w.head < len(w.txns) {
		return w.txns[w.head].time
	}
	return time.Time{}
}

// add counts one more unacknowledged event in the open transaction.
func (w *watermark) add(seq uint64) { w.at(seq).pending++ }

// commit closes the open transaction, which ends at end.
func (w *watermark) commit(seq uint64, end pglogrepl.LSN) {
	t := w.at(seq)
	t.end, t.committed = end, true
	w.open = false
	w.advance()
}

// ack records one acknowledged event of transaction seq.
func (w *watermark) ack(seq uint64) {
	w.at(seq).pending--
	w.advance()
}

// idle reports whether every transaction seen is committed and acknowledged.
func (w *watermark) idle() bool { return !w.open && w.head == len(w.txns) }

// follow moves the position to lsn when idle; the server reports that WAL up
// to lsn holds no transaction the relay has yet to see.
func (w *watermark) follow(lsn pglogrepl.LSN) {
	if w.idle() && lsn > w.flushed {
		w.flushed = lsn
	}
}

func (w *watermark) at(seq uint64) *txn { return &w.txns[w.head+int(seq-w.headSeq)] }

func (w *watermark) advance() {
	for w.head < len(w.txns) {
		t := &w.txns[w.head]
		if !t.committed || t.pending > 0 {
			break
		}
		if t.end > w.flushed {
			w.flushed = t.end
		}
		w.head++
		w.headSeq++
	}
	// Reuse the backing array once it has drained, or compact when the
	// finished prefix dominates.
	switch {
	case w.head == len(w.txns):
		w.txns, w.head = w.txns[:0], 0
	case w.head > 1024 && w.head > len(w.txns)/2:
		n := copy(w.txns, w.txns[w.head:])
		w.txns, w.head = w.txns[:n], 0
	}
}
