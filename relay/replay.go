package relay

import (
	"github.com/jackc/pglogrepl"

	"github.com/outbox-relay/outbox-relay/schema"
)

// replay numbers the rows of each transaction and recognises what
// PostgreSQL sends again after the stream reconnects: every transaction
// after the confirmed position, some of them relayed before, and the
// transaction that was open when the connection broke, from its first row.
// It decides which transactions and rows the Relay reads past and which it
// publishes, so that each row is published once. It is not safe for
// concurrent use; the stream's goroutine owns it.
type replay struct {
	last      pglogrepl.LSN // commit LSN of the newest committed transaction
	commitLSN pglogrepl.LSN // commit LSN of the current transaction
	index     uint32        // index of the current transaction's next row
	published uint32        // rows of the open transaction published before a reconnect
	skipping  bool          // the current transaction was relayed before
}

// verdict is what replay.begin makes of a transaction.
type verdict int

const (
	// beginNew: a transaction not seen before; the Relay relays it.
	beginNew verdict = iota
	// beginResume: the open transaction, sent again; its rows published
	// before are read past, the others published.
	beginResume
	// beginReadPast: a transaction relayed before; the Relay reads it past.
	beginReadPast
	// beginLost: the stream went on past the open transaction without
	// sending it again, so its end can never be confirmed; the Relay fails,
	// and reads the transaction past.
	beginLost
)

// begin decides about the transaction whose commit record is at commitLSN.
// open reports that a transaction began and did not commit.
func (p *replay) begin(commitLSN pglogrepl.LSN, open bool) verdict {
	switch {
	case !open && commitLSN > p.last:
		p.commitLSN, p.index, p.published, p.skipping = commitLSN, 0, 0, false
		return beginNew
	case open && commitLSN == p.commitLSN:
		// A reconnect during an earlier replay may come before index
		// reaches the rows published: keep the most published.
		p.published, p.index, p.skipping = max(p.published, p.index), 0, false
		return beginResume
	case commitLSN <= p.last || (open && commitLSN < p.commitLSN):
		p.skipping = true
		return beginReadPast
	default: // open, and commitLSN is past the open transaction's
		p.skipping = true
		return beginLost
	}
}

// relayedBefore reports whether the current transaction's next row was
// relayed before: the Relay reads it past with pass.
func (p *replay) relayedBefore() bool {
	return p.skipping || p.index < p.published
}

// pass reads past the next row, one relayedBefore reported.
func (p *replay) pass() {
	if !p.skipping {
		p.index++
	}
}

// next returns the position of the next row, which the Relay publishes, and
// moves past it.
func (p *replay) next() schema.Position {
	pos := schema.Position{CommitLSN: p.commitLSN, Index: p.index}
	p.index++
	return pos
}

// commit closes the current transaction and reports whether the Relay
// commits it: false for a transaction read past.
func (p *replay) commit() bool {
	if p.skipping {
		p.skipping = false
		return false
	}
	p.last, p.published = p.commitLSN, 0
	return true
}

// readPastBefore makes begin read past every transaction committing before
// fence, the end of a transaction already delivered: the next transaction's
// commit record starts at or after it. A zero fence covers nothing.
func (p *replay) readPastBefore(fence pglogrepl.LSN) {
	if fence > 0 {
		p.last = max(p.last, fence-1)
	}
}
