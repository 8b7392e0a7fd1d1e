package relay

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pglogrepl"
	"pgregory.net/rapid"
)

type wmOp int

const (
	opBegin  wmOp = iota // open the next transaction
	opAdd                // one more event in the open transaction
	opCommit             // commit the open transaction at lsn
	opAck                // acknowledge one event of transaction txn
	opFollow             // keepalive at lsn
)

func (o wmOp) String() string {
	return [...]string{"begin", "add", "commit", "ack", "follow"}[o]
}

// wmStep is one call on a watermark and the flush position it must leave.
type wmStep struct {
	op   wmOp
	txn  int           // transaction, in begin order, for opAck
	lsn  pglogrepl.LSN // end for opCommit, WAL end for opFollow
	want pglogrepl.LSN // flushed after the step
}

func TestWatermark(t *testing.T) {
	tests := []struct {
		name     string
		steps    []wmStep
		wantIdle bool
	}{
		{
			name:     "nothing seen",
			steps:    nil,
			wantIdle: true,
		},
		{
			name: "empty transaction flushes at commit",
			steps: []wmStep{
				{op: opBegin, want: 0},
				{op: opCommit, lsn: 0x100, want: 0x100},
			},
			wantIdle: true,
		},
		{
			name: "one event waits for its ack",
			steps: []wmStep{
				{op: opBegin, want: 0},
				{op: opAdd, want: 0},
				{op: opCommit, lsn: 0x100, want: 0},
				{op: opAck, txn: 0, want: 0x100},
			},
			wantIdle: true,
		},
		{
			name: "acked before commit waits for commit",
			steps: []wmStep{
				{op: opBegin, want: 0},
				{op: opAdd, want: 0},
				{op: opAdd, want: 0},
				{op: opAck, txn: 0, want: 0},
				{op: opAck, txn: 0, want: 0},
				{op: opCommit, lsn: 0x100, want: 0x100},
			},
			wantIdle: true,
		},
		{
			name: "open transaction not yet committed",
			steps: []wmStep{
				{op: opBegin, want: 0},
				{op: opAdd, want: 0},
				{op: opAck, txn: 0, want: 0},
			},
			wantIdle: false,
		},
		{
			name: "later transaction acked first waits for earlier",
			steps: []wmStep{
				{op: opBegin}, {op: opAdd}, {op: opAdd}, {op: opCommit, lsn: 0x100},
				{op: opBegin}, {op: opAdd}, {op: opCommit, lsn: 0x200},
				{op: opAck, txn: 1, want: 0},
				{op: opAck, txn: 0, want: 0},
				{op: opAck, txn: 0, want: 0x200},
			},
			wantIdle: true,
		},
		{
			name: "out of order acks advance in steps",
			steps: []wmStep{
				{op: opBegin}, {op: opAdd}, {op: opCommit, lsn: 0x100},
				{op: opBegin}, {op: opAdd}, {op: opCommit, lsn: 0x200},
				{op: opBegin}, {op: opAdd}, {op: opCommit, lsn: 0x300},
				{op: opBegin}, {op: opAdd}, {op: opCommit, lsn: 0x400},
				{op: opAck, txn: 2, want: 0},
				{op: opAck, txn: 0, want: 0x100},
				{op: opAck, txn: 1, want: 0x300},
				{op: opAck, txn: 3, want: 0x400},
			},
			wantIdle: true,
		},
		{
			name: "empty transaction behind a pending one",
			steps: []wmStep{
				{op: opBegin}, {op: opAdd}, {op: opCommit, lsn: 0x100},
				{op: opBegin, want: 0},
				{op: opCommit, lsn: 0x200, want: 0},
				{op: opBegin, want: 0},
				{op: opCommit, lsn: 0x300, want: 0},
				{op: opAck, txn: 0, want: 0x300},
			},
			wantIdle: true,
		},
		{
			name: "acks of the open transaction do not pass it",
			steps: []wmStep{
				{op: opBegin}, {op: opAdd}, {op: opCommit, lsn: 0x100},
				{op: opBegin}, {op: opAdd},
				{op: opAck, txn: 0, want: 0x100},
				{op: opAck, txn: 1, want: 0x100},
				{op: opAdd, want: 0x100},
				{op: opCommit, lsn: 0x200, want: 0x100},
				{op: opAck, txn: 1, want: 0x200},
			},
			wantIdle: true,
		},
		{
			name: "follow before any transaction",
			steps: []wmStep{
				{op: opFollow, lsn: 0x50, want: 0x50},
			},
			wantIdle: true,
		},
		{
			name: "follow when idle",
			steps: []wmStep{
				{op: opBegin}, {op: opAdd}, {op: opCommit, lsn: 0x100},
				{op: opAck, txn: 0, want: 0x100},
				{op: opFollow, lsn: 0x500, want: 0x500},
			},
			wantIdle: true,
		},
		{
			name: "follow ignored while a transaction is open",
			steps: []wmStep{
				{op: opBegin, want: 0},
				{op: opFollow, lsn: 0x500, want: 0},
				{op: opAdd, want: 0},
				{op: opAck, txn: 0, want: 0},
				{op: opFollow, lsn: 0x500, want: 0},
				{op: opCommit, lsn: 0x100, want: 0x100},
				{op: opFollow, lsn: 0x500, want: 0x500},
			},
			wantIdle: true,
		},
		{
			name: "follow ignored while an empty transaction is open",
			steps: []wmStep{
				{op: opFollow, lsn: 0x80, want: 0x80},
				{op: opBegin, want: 0x80},
				{op: opFollow, lsn: 0x500, want: 0x80},
				{op: opCommit, lsn: 0x100, want: 0x100},
			},
			wantIdle: true,
		},
		{
			name: "follow ignored while events are pending",
			steps: []wmStep{
				{op: opBegin}, {op: opAdd}, {op: opAdd}, {op: opCommit, lsn: 0x100},
				{op: opFollow, lsn: 0x500, want: 0},
				{op: opAck, txn: 0, want: 0},
				{op: opFollow, lsn: 0x500, want: 0},
				{op: opAck, txn: 0, want: 0x100},
				{op: opFollow, lsn: 0x500, want: 0x500},
			},
			wantIdle: true,
		},
		{
			name: "follow ignored while an earlier transaction is pending and none open",
			steps: []wmStep{
				{op: opBegin}, {op: opAdd}, {op: opCommit, lsn: 0x100},
				{op: opBegin}, {op: opCommit, lsn: 0x200},
				{op: opFollow, lsn: 0x500, want: 0},
			},
			wantIdle: false,
		},
		{
			name: "follow never moves back",
			steps: []wmStep{
				{op: opFollow, lsn: 0x500, want: 0x500},
				{op: opFollow, lsn: 0x400, want: 0x500},
				{op: opFollow, lsn: 0x500, want: 0x500},
			},
			wantIdle: true,
		},
		{
			name: "commit below a followed position does not move back",
			steps: []wmStep{
				{op: opFollow, lsn: 0x500, want: 0x500},
				{op: opBegin, want: 0x500},
				{op: opCommit, lsn: 0x300, want: 0x500},
				{op: opBegin, want: 0x500},
				{op: opAdd, want: 0x500},
				{op: opCommit, lsn: 0x600, want: 0x500},
				{op: opAck, txn: 1, want: 0x600},
			},
			wantIdle: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w watermark
			var seqs []uint64
			for i, s := range tt.steps {
				switch s.op {
				case opBegin:
					seqs = append(seqs, w.begin())
				case opAdd:
					w.add(seqs[len(seqs)-1])
				case opCommit:
					w.commit(seqs[len(seqs)-1], s.lsn)
				case opAck:
					w.ack(seqs[s.txn])
				case opFollow:
					w.follow(s.lsn)
				}
				if w.flushed != s.want {
					t.Fatalf("step %d (%v txn=%d lsn=%s): flushed = %s, want %s", i, s.op, s.txn, s.lsn, w.flushed, s.want)
				}
			}
			if got := w.idle(); got != tt.wantIdle {
				t.Errorf("idle() = %t, want %t", got, tt.wantIdle)
			}
		})
	}
}

// TestWatermarkSeq checks that sequence numbers keep counting across the
// reuse and compaction of the backing array, so an ack always finds its
// transaction.
func TestWatermarkSeq(t *testing.T) {
	var w watermark
	var want uint64
	// Drained one at a time: the array is reused from index 0.
	for range 5 {
		if got := w.begin(); got != want {
			t.Fatalf("begin() = %d, want %d", got, want)
		}
		w.commit(want, pglogrepl.LSN(want+1)*0x10)
		want++
	}
	// Several outstanding at once.
	var open []uint64
	for range 3 {
		seq := w.begin()
		if seq != want {
			t.Fatalf("begin() = %d, want %d", seq, want)
		}
		w.add(seq)
		w.commit(seq, pglogrepl.LSN(want+1)*0x10)
		open = append(open, seq)
		want++
	}
	for i := len(open) - 1; i >= 0; i-- {
		w.ack(open[i])
	}
	if got, wantLSN := w.flushed, pglogrepl.LSN(want)*0x10; got != wantLSN {
		t.Errorf("flushed = %s, want %s", got, wantLSN)
	}
	if got := w.begin(); got != want {
		t.Errorf("begin() after drain = %d, want %d", got, want)
	}
}

// TestWatermarkCompaction keeps a window of unacknowledged transactions
// sliding over many more transactions than the compaction threshold, acking
// inside the window in random order, and checks both that the position is
// exact and that the slice stays bounded.
func TestWatermarkCompaction(t *testing.T) {
	tests := []struct {
		name   string
		txns   int
		window int
	}{
		{name: "narrow window", txns: 20000, window: 3},
		{name: "window near threshold", txns: 20000, window: 1000},
		{name: "window above threshold", txns: 20000, window: 3000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(tt.window)))
			var w watermark
			type pending struct {
				seq uint64
				i   int
			}
			var window []pending
			acked := make([]bool, tt.txns)
			done := 0 // transactions [0, done) are acknowledged
			end := func(i int) pglogrepl.LSN { return pglogrepl.LSN(i+1) * 0x100 }
			ackOne := func() {
				k := rng.IntN(len(window))
				p := window[k]
				window[k] = window[len(window)-1]
				window = window[:len(window)-1]
				w.ack(p.seq)
				acked[p.i] = true
				for done < tt.txns && acked[done] {
					done++
				}
			}
			for i := range tt.txns {
				seq := w.begin()
				w.add(seq)
				w.commit(seq, end(i))
				window = append(window, pending{seq, i})
				if len(window) > tt.window {
					ackOne()
				}
				var want pglogrepl.LSN
				if done > 0 {
					want = end(done - 1)
				}
				if w.flushed != want {
					t.Fatalf("after txn %d: flushed = %s, want %s", i, w.flushed, want)
				}
				live := len(w.txns) - w.head
				if want := i + 1 - done; live != want {
					t.Fatalf("after txn %d: %d transactions tracked, want %d", i, live, want)
				}
				// The finished prefix is dropped once it passes 1024
				// entries and outweighs the live part; without that the
				// slice grows with every transaction.
				if w.head > max(1024, live) {
					t.Fatalf("after txn %d: %d finished transactions kept before %d live ones", i, w.head, live)
				}
			}
			for len(window) > 0 {
				ackOne()
			}
			if want := end(tt.txns - 1); w.flushed != want {
				t.Errorf("after all acks: flushed = %s, want %s", w.flushed, want)
			}
			if !w.idle() {
				t.Errorf("after all acks: idle() = false, want true")
			}
			if len(w.txns) != 0 || w.head != 0 {
				t.Errorf("after all acks: len(txns) = %d, head = %d, want 0, 0", len(w.txns), w.head)
			}
		})
	}
}

// wmModel is the obvious specification of the flush position, written
// without the watermark's indexing and compaction.
type wmModel struct {
	txns    []*modelTxn
	open    *modelTxn
	unacked []*modelTxn // one entry per published, unacknowledged event

	lastEnd       pglogrepl.LSN // end of the newest committed transaction
	maxKeepalive  pglogrepl.LSN // greatest keepalive LSN given at any time
	maxIdleFollow pglogrepl.LSN // greatest keepalive LSN given while idle
	allowed       map[pglogrepl.LSN]bool
	flushed       pglogrepl.LSN // flushed as last observed
}

type modelTxn struct {
	seq       uint64
	floor     pglogrepl.LSN // the end will be above this
	end       pglogrepl.LSN
	committed bool
	events    int
}

func (m *wmModel) idle() bool { return m.open == nil && len(m.unacked) == 0 }

// want is the exact flush position the specification allows: the end of the
// longest committed, fully acknowledged prefix, or a keepalive given while
// idle, whichever is greater.
func (m *wmModel) want() pglogrepl.LSN {
	pending := make(map[*modelTxn]bool)
	for _, tx := range m.unacked {
		pending[tx] = true
	}
	var prefix pglogrepl.LSN
	for _, tx := range m.txns {
		if !tx.committed || pending[tx] {
			break
		}
		prefix = max(prefix, tx.end)
	}
	return max(prefix, m.maxIdleFollow)
}

// check compares the observed flush position and idleness with the model.
func (m *wmModel) check(t *rapid.T, got pglogrepl.LSN, gotIdle bool, step string) {
	// (a) monotonic.
	if got < m.flushed {
		t.Fatalf("%s: flushed = %s, moved back from %s", step, got, m.flushed)
	}
	m.flushed = got
	// (b) never at or past the end of a transaction with an unacked event.
	for _, tx := range m.unacked {
		if tx.committed && got >= tx.end {
			t.Fatalf("%s: flushed = %s, but txn %d ending at %s has an unacked event", step, got, tx.seq, tx.end)
		}
		if !tx.committed && got > tx.floor {
			t.Fatalf("%s: flushed = %s, past %s, below which open txn %d with an unacked event may end", step, got, tx.floor, tx.seq)
		}
	}
	// (c) only a commit end, an idle keepalive, or zero.
	if got != 0 && !m.allowed[got] {
		t.Fatalf("%s: flushed = %s, neither a commit end nor a keepalive given while idle", step, got)
	}
	// (d) reaches the end once quiet.
	if m.idle() {
		if want := max(m.lastEnd, m.maxIdleFollow); got != want {
			t.Fatalf("%s: all committed and acked: flushed = %s, want %s", step, got, want)
		}
	}
	// And, stronger than the four above: exactly the specification.
	if want := m.want(); got != want {
		t.Fatalf("%s: flushed = %s, want %s", step, got, want)
	}
	if want := m.idle(); gotIdle != want {
		t.Fatalf("%s: idle() = %t, want %t", step, gotIdle, want)
	}
}

// TestWatermarkProperty drives the watermark like the replication stream and
// the sink would: transactions arrive one at a time in commit order, acks of
// any published event come in any order at any time, keepalives come
// anywhere. After every step the position must match the specification.
func TestWatermarkProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		const maxEvents = 6 // per transaction
		maxTxns := rapid.IntRange(1, 40).Draw(t, "txns")
		steps := rapid.IntRange(1, 400).Draw(t, "steps")
		m := &wmModel{allowed: make(map[pglogrepl.LSN]bool)}
		var w watermark

		begin := func() {
			seq := w.begin()
			if want := uint64(len(m.txns)); seq != want {
				t.Fatalf("begin() = %d, want %d", seq, want)
			}
			m.open = &modelTxn{seq: seq, floor: max(m.lastEnd, m.maxKeepalive)}
			m.txns = append(m.txns, m.open)
		}
		add := func() {
			w.add(m.open.seq)
			m.open.events++
			m.unacked = append(m.unacked, m.open)
		}
		commit := func() {
			end := m.open.floor + pglogrepl.LSN(rapid.IntRange(1, 0x1000).Draw(t, "end gap"))
			w.commit(m.open.seq, end)
			m.open.end, m.open.committed = end, true
			m.lastEnd = end
			m.allowed[end] = true
			m.open = nil
		}
		ack := func() {
			k := rapid.IntRange(0, len(m.unacked)-1).Draw(t, "ack")
			tx := m.unacked[k]
			m.unacked = append(m.unacked[:k], m.unacked[k+1:]...)
			w.ack(tx.seq)
		}
		keepalive := func() {
			lsn := m.lastEnd + pglogrepl.LSN(rapid.IntRange(0, 0x2000).Draw(t, "keepalive gap"))
			idle := m.idle()
			w.follow(lsn)
			m.maxKeepalive = max(m.maxKeepalive, lsn)
			if idle {
				m.maxIdleFollow = max(m.maxIdleFollow, lsn)
				m.allowed[lsn] = true
			}
		}

		check := func(step string) { m.check(t, w.flushed, w.idle(), step) }
		check("start")
		for i := range steps {
			var ops []string
			switch {
			case m.open == nil && len(m.txns) < maxTxns:
				ops = append(ops, "begin")
			case m.open != nil:
				ops = append(ops, "commit")
				if m.open.events < maxEvents {
					ops = append(ops, "add")
				}
			}
			if len(m.unacked) > 0 {
				ops = append(ops, "ack")
			}
			ops = append(ops, "keepalive")
			op := rapid.SampledFrom(ops).Draw(t, "op")
			switch op {
			case "begin":
				begin()
			case "add":
				add()
			case "commit":
				commit()
			case "ack":
				ack()
			case "keepalive":
				keepalive()
			}
			check(fmt.Sprintf("step %d (%s)", i, op))
		}

		// Finish the stream: commit what is open, ack the rest in random
		// order, then one last keepalive.
		if m.open != nil {
			commit()
			check("final commit")
		}
		for len(m.unacked) > 0 {
			ack()
			check("final ack")
		}
		if want := max(m.lastEnd, m.maxIdleFollow); w.flushed != want {
			t.Fatalf("all acked: flushed = %s, want %s", w.flushed, want)
		}
		keepalive()
		check("final keepalive")
	})
}

// BenchmarkWatermark measures the per-transaction cost: begin, add, commit,
// and the acks, with some transactions always outstanding.
func BenchmarkWatermark(b *testing.B) {
	for _, bm := range []struct {
		name            string
		events, pending int
	}{
		{name: "events=1/pending=0", events: 1},
		{name: "events=16/pending=0", events: 16},
		{name: "events=1/pending=64", events: 1, pending: 64},
		{name: "events=1/pending=4096", events: 1, pending: 4096},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			var w watermark
			ring := make([]uint64, bm.pending+1)
			var lsn pglogrepl.LSN
			i := 0
			for b.Loop() {
				seq := w.begin()
				for range bm.events {
					w.add(seq)
				}
				lsn += 0x100
				w.commit(seq, lsn)
				// Ack the transaction begun pending transactions ago.
				ring[i%len(ring)] = seq
				if i >= bm.pending {
					old := ring[(i+1)%len(ring)]
					for range bm.events {
						w.ack(old)
					}
				}
				i++
			}
		})
	}
}
