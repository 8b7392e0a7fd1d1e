package relay

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	"pgregory.net/rapid"

	"github.com/outbox-relay/outbox-relay/schema"
)

// replayDriver feeds a replay as the Relay does, keeping the open flag the
// watermark would keep: set by a new transaction, cleared by its commit.
type replayDriver struct {
	p    replay
	open bool
}

func (d *replayDriver) begin(commitLSN pglogrepl.LSN) verdict {
	v := d.p.begin(commitLSN, d.open)
	if v == beginNew {
		d.open = true
	}
	return v
}

// row reads the next row: its position if it is published, or false if it
// is read past.
func (d *replayDriver) row() (schema.Position, bool) {
	if d.p.relayedBefore() {
		d.p.pass()
		return schema.Position{}, false
	}
	return d.p.next(), true
}

func (d *replayDriver) commit() bool {
	ok := d.p.commit()
	if ok {
		d.open = false
	}
	return ok
}

var verdictNames = map[verdict]string{
	beginNew:      "new",
	beginResume:   "resume",
	beginReadPast: "past",
	beginLost:     "lost",
}

// TestReplay feeds replay streams written one message a word: Bi is the
// Begin of transaction i (at commitLSN(i)), R a row of it, C its commit, Fi
// the fence Resume read (endLSN(i); F alone is a zero fence), | a reconnect.
// The outcome of each is one word: for B, replay's verdict (new, resume,
// past, lost); for R, #n when published as row n of the current
// transaction, past when read past; for C, commit, or past when read past;
// - for F, | for |.
func TestReplay(t *testing.T) {
	tests := []struct {
		name   string
		stream string
		want   string
	}{
		{
			name:   "rows are numbered per transaction",
			stream: "B0 R R C B1 C B2 R C",
			want:   "new #0 #1 commit new commit new #0 commit",
		},
		{
			name:   "committed transactions sent again are read past",
			stream: "B0 R C B1 R C | B0 R C B1 R C B2 R C",
			want:   "new #0 commit new #0 commit | past past past past past past new #0 commit",
		},
		{
			name:   "open transaction resumes after its published rows",
			stream: "B0 R R C B1 R R | B0 R R C B1 R R R R C",
			want:   "new #0 #1 commit new #0 #1 | past past past past resume past past #2 #3 commit",
		},
		{
			name:   "reconnect before the replay reaches the published rows",
			stream: "B0 R R R | B0 R | B0 R R R R R C",
			want:   "new #0 #1 #2 | resume past | resume past past past #3 #4 commit",
		},
		{
			name:   "reconnect right after the published rows",
			stream: "B0 R R | B0 R R | B0 R R R C",
			want:   "new #0 #1 | resume past past | resume past past #2 commit",
		},
		{
			name:   "open transaction with nothing published",
			stream: "B0 | B0 R C",
			want:   "new | resume #0 commit",
		},
		{
			name:   "committed transaction before the open one",
			stream: "B0 R C B1 R | B0 R C B1 R R C",
			want:   "new #0 commit new #0 | past past past resume past #1 commit",
		},
		{
			// Only transactions after the open one can be new to the Relay.
			name:   "transaction before the open one, never seen, is read past",
			stream: "B0 C B2 R | B1 R C B2 R R C",
			want:   "new commit new #0 | past past past resume past #1 commit",
		},
		{
			name:   "stream goes on past the open transaction",
			stream: "B0 R | B1 R C B2",
			want:   "new #0 | lost past past lost",
		},
		{
			name:   "fence reads past the transactions it covers",
			stream: "F1 B0 R C B1 R C B2 R C",
			want:   "- past past past past past past new #0 commit",
		},
		{
			name:   "fence below the last commit changes nothing",
			stream: "B0 C B1 R C F0 | B1 R C B2 R C",
			want:   "new commit new #0 commit - | past past past new #0 commit",
		},
		{
			name:   "zero fence covers nothing",
			stream: "F B0 R C",
			want:   "- new #0 commit",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d replayDriver
			var got []string
			txn := -1 // the transaction of the last Begin
			for _, msg := range strings.Fields(tt.stream) {
				n := -1
				if len(msg) > 1 {
					var err error
					if n, err = strconv.Atoi(msg[1:]); err != nil {
						t.Fatalf("stream %q: message %q: %v", tt.stream, msg, err)
					}
				}
				switch msg[0] {
				case 'B':
					txn = n
					got = append(got, verdictNames[d.begin(commitLSN(n))])
				case 'R':
					pos, ok := d.row()
					switch {
					case !ok:
						got = append(got, "past")
					case pos.CommitLSN != commitLSN(txn):
						got = append(got, fmt.Sprintf("#%d@%s", pos.Index, pos.CommitLSN))
					default:
						got = append(got, fmt.Sprintf("#%d", pos.Index))
					}
				case 'C':
					if d.commit() {
						got = append(got, "commit")
					} else {
						got = append(got, "past")
					}
				case 'F':
					fence := pglogrepl.LSN(0)
					if n >= 0 {
						fence = endLSN(n)
					}
					d.p.readPastBefore(fence)
					got = append(got, "-")
				case '|':
					got = append(got, "|")
				default:
					t.Fatalf("stream %q: unknown message %q", tt.stream, msg)
				}
			}
			if diff := cmp.Diff(strings.Fields(tt.want), got); diff != "" {
				t.Errorf("replay of %q = %q, want %q (-want +got):\n%s", tt.stream, strings.Join(got, " "), tt.want, diff)
			}
		})
	}
}

// TestReplayProperty reads a stream of transactions in sessions, each
// starting at a transaction the replay has seen commit or at the first one
// it has not (where PostgreSQL may resend from), and all but the last
// breaking at a random message. Every row is published exactly once, in
// stream order, at its own position, and no transaction is lost.
func TestReplayProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sizes := rapid.SliceOfN(rapid.IntRange(0, 4), 1, 12).Draw(t, "rows per transaction")
		sessions := rapid.IntRange(1, 6).Draw(t, "sessions")
		var d replayDriver
		var got []schema.Position
		done := 0 // transactions whose commit the replay has taken
		for s := range sessions {
			from := rapid.IntRange(0, done).Draw(t, "from")
			type msg struct {
				kind     byte
				txn, row int
			}
			var msgs []msg
			for txn := from; txn < len(sizes); txn++ {
				msgs = append(msgs, msg{kind: 'B', txn: txn})
				for row := range sizes[txn] {
					msgs = append(msgs, msg{kind: 'R', txn: txn, row: row})
				}
				msgs = append(msgs, msg{kind: 'C', txn: txn})
			}
			if s < sessions-1 {
				msgs = msgs[:rapid.IntRange(0, len(msgs)).Draw(t, "break after")]
			}
			for _, m := range msgs {
				switch m.kind {
				case 'B':
					if v := d.begin(commitLSN(m.txn)); v == beginLost {
						t.Fatalf("session %d from transaction %d: Begin of transaction %d lost", s, from, m.txn)
					}
				case 'R':
					pos, ok := d.row()
					if !ok {
						continue
					}
					if want := (schema.Position{CommitLSN: commitLSN(m.txn), Index: uint32(m.row)}); pos != want {
						t.Fatalf("session %d from transaction %d: row %d of transaction %d published at %+v, want %+v", s, from, m.row, m.txn, pos, want)
					}
					got = append(got, pos)
				case 'C':
					if d.commit() {
						if m.txn != done {
							t.Fatalf("session %d: commit of transaction %d taken, want transaction %d", s, m.txn, done)
						}
						done++
					}
				}
			}
		}
		var want []schema.Position
		for txn, n := range sizes {
			for row := range n {
				want = append(want, schema.Position{CommitLSN: commitLSN(txn), Index: uint32(row)})
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("published positions (-want +got):\n%s", diff)
		}
		if done != len(sizes) || d.open {
			t.Fatalf("%d of %d transactions committed, open %t; want all, none open", done, len(sizes), d.open)
		}
	})
}

// TestReplayAfterReconnect feeds the relay what PostgreSQL sends after the
// stream reconnects: every transaction after the confirmed position again,
// possibly starting with ones already relayed, and the transaction that was
// open when the connection broke, from its first row.
func TestReplayAfterReconnect(t *testing.T) {
	h := &held{}
	r, _ := newTestRelay(t, Config{}, h.sink())
	insert := func(txn, row int) {
		t.Helper()
		if err := r.Insert(t.Context(), newEvent(fmt.Sprintf("t%d-e%d", txn, row), 10)); err != nil {
			t.Fatalf("Insert = %v", err)
		}
	}
	// Session 1: transaction 0 complete, transaction 1 broken after 2 of 4 rows.
	r.Begin(commitLSN(0), commitTime)
	insert(0, 0)
	insert(0, 1)
	r.Commit(endLSN(0))
	r.Begin(commitLSN(1), commitTime)
	insert(1, 0)
	insert(1, 1)
	if got := h.len(); got != 4 {
		t.Fatalf("published %d events in session 1, want 4", got)
	}

	// Session 2 starts from the confirmed position, before transaction 0.
	r.Begin(commitLSN(0), commitTime)
	insert(0, 0)
	insert(0, 1)
	r.Commit(endLSN(0))
	r.Keepalive(endLSN(0)) // ignored: transaction 1 is open
	r.Begin(commitLSN(1), commitTime)
	for row := range 4 {
		insert(1, row)
	}
	r.Commit(endLSN(1))
	r.Begin(commitLSN(2), commitTime)
	insert(2, 0)
	r.Commit(endLSN(2))

	evs := h.published()
	var got []string
	for _, ev := range evs {
		got = append(got, fmt.Sprintf("%s@%d", ev.ID, ev.Position.Index))
	}
	want := []string{"t0-e0@0", "t0-e1@1", "t1-e0@0", "t1-e1@1", "t1-e2@2", "t1-e3@3", "t2-e0@0"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("published %v, want %v (replays read past, the open transaction resumed)", got, want)
	}
	h.ackAll(t)
	if got := r.Flushed(); got != endLSN(2) {
		t.Errorf("Flushed() = %s after all acks, want %s", got, endLSN(2))
	}
	if r.wm.open {
		t.Error("watermark still has an open transaction")
	}
}

// TestReplaySkipsOpenTransaction fails the relay when a reconnected stream
// goes past the open transaction without sending it: its end could never be
// confirmed.
func TestReplaySkipsOpenTransaction(t *testing.T) {
	h := &held{}
	r, _ := newTestRelay(t, Config{}, h.sink())
	r.Begin(commitLSN(1), commitTime)
	if err := r.Insert(t.Context(), newEvent("a", 1)); err != nil {
		t.Fatal(err)
	}
	r.Begin(commitLSN(2), commitTime)
	if err := r.Insert(t.Context(), newEvent("b", 1)); err == nil {
		t.Error("Insert after a lost open transaction = nil, want the relay's failure")
	}
	if err := r.Run(t.Context()); err == nil {
		t.Error("Run() = nil, want the failure")
	}
	if h.len() != 1 {
		t.Errorf("published %d events, want only the first", h.len())
	}
}

// TestReplayTwoReconnectsInOpenTransaction reconnects twice while one
// transaction is open; the second reconnect comes before the replay has
// reached the rows published in the first session. No row is published
// twice, and every row is published once.
func TestReplayTwoReconnectsInOpenTransaction(t *testing.T) {
	var mu sync.Mutex
	count := map[string]int{}
	var order []string
	sink := &fakeSink{publish: func(_ context.Context, ev *schema.Event, done func(error)) {
		mu.Lock()
		count[ev.ID]++
		order = append(order, fmt.Sprintf("%s@%d", ev.ID, ev.Position.Index))
		mu.Unlock()
		done(nil)
	}}
	r, _ := newTestRelay(t, Config{}, sink)
	insert := func(row int) {
		t.Helper()
		if err := r.Insert(t.Context(), newEvent(fmt.Sprintf("e%d", row), 10)); err != nil {
			t.Fatalf("Insert(row %d) = %v", row, err)
		}
	}
	sessions := []struct {
		name string
		rows int  // rows of the transaction the session reads
		end  bool // the session reads the commit
	}{
		{"first session, broken after 3 rows", 3, false},
		{"second session, broken after 1 row", 1, false},
		{"third session, reads the whole transaction", 5, true},
	}
	for _, s := range sessions {
		r.Begin(commitLSN(0), commitTime)
		for row := range s.rows {
			insert(row)
		}
		if s.end {
			r.Commit(endLSN(0))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for id, n := range count {
		if n != 1 {
			t.Errorf("event %s published %d times, want once (published %v)", id, n, order)
		}
	}
	want := []string{"e0@0", "e1@1", "e2@2", "e3@3", "e4@4"}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("published %v, want %v", order, want)
	}
	if got := r.Flushed(); got != endLSN(0) {
		t.Errorf("Flushed() = %s, want %s", got, endLSN(0))
	}
}
