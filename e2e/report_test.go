package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/schema"
)

// TestReportFindsFaults feeds ledger.check hand-made deliveries with one
// fault each, so that the acceptance tests' verdicts can be trusted.
func TestReportFindsFaults(t *testing.T) {
	// Two writers; writer 0 commits a two-row transaction on aggregate
	// order-0000 then one row on it; writer 1 commits one row on
	// customer-0001 (with headers), rolls one back, and commits one on
	// order-0003, which shares a partition with order-0000.
	var l ledger
	l.init(&workload{Writers: 2})
	msg := func(id, typ, agg string, seq int, h map[string]string) schema.Message {
		return schema.Message{ID: id, AggregateType: typ, AggregateID: agg, EventType: "updated",
			Payload: []byte(fmt.Sprintf(`{"seq":%d,"agg":%q}`, seq, agg)), Headers: h}
	}
	a0 := msg("a0", "order", "order-0000", 0, nil)
	a1 := msg("a1", "order", "order-0000", 1, nil)
	a2 := msg("a2", "order", "order-0000", 2, nil)
	b0 := msg("b0", "customer", "customer-0001", 0, map[string]string{"trace_id": "t1", "lang": "grüße"})
	l.committed(0, []schema.Message{a0, a1})
	l.committed(1, []schema.Message{b0})
	c0 := msg("c0", "order", "order-0003", 0, nil)
	l.committed(1, []schema.Message{c0})
	l.committed(0, []schema.Message{a2})
	l.rolledBack([]schema.Message{msg("x0", "customer", "customer-0001", 1, nil)})

	rec := func(m schema.Message, lsn pglogrepl.LSN, index uint32, partition int32) *kgo.Record {
		pos := schema.Position{CommitLSN: lsn, Index: index}
		r := &kgo.Record{
			Topic: "outbox." + m.AggregateType, Partition: partition,
			Key:   []byte(m.AggregateID),
			Value: []byte(strings.ReplaceAll(string(m.Payload), ":", ": ")), // as jsonb prints it
			Headers: []kgo.RecordHeader{
				{Key: "id", Value: []byte(m.ID)},
				{Key: "event_type", Value: []byte(m.EventType)},
				{Key: "aggregate_type", Value: []byte(m.AggregateType)},
				{Key: "position", Value: []byte(pos.String())},
			},
		}
		for _, k := range []string{"lang", "trace_id"} { // jsonb's key order
			if v, ok := m.Headers[k]; ok {
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
			}
		}
		return r
	}
	good := func() []*kgo.Record {
		return []*kgo.Record{
			rec(a0, 0x100, 0, 1), rec(a1, 0x100, 1, 1),
			rec(b0, 0x200, 0, 4),
			rec(c0, 0x250, 0, 1),
			rec(a2, 0x300, 0, 1),
		}
	}
	tests := []struct {
		name   string
		recs   func() []*kgo.Record
		want   report
		detail string
	}{
		{name: "all good", recs: good, want: report{Records: 5, Rows: 5}},
		{
			name: "replay",
			recs: func() []*kgo.Record { return append(good(), rec(a1, 0x100, 1, 1), rec(a2, 0x300, 0, 1)) },
			want: report{Records: 7, Rows: 5, Duplicates: 2},
		},
		{
			name:   "lost row",
			recs:   func() []*kgo.Record { r := good(); return append(r[:1], r[2:]...) },
			want:   report{Records: 4, Rows: 4, Missing: 1},
			detail: "missing: row a1",
		},
		{
			name: "aggregate reordered",
			recs: func() []*kgo.Record {
				r := good()
				r[1], r[4] = r[4], r[1]
				return r
			},
			want:   report{Records: 5, Rows: 5, OutOfOrder: 1, PositionDisorder: 2}, // a2 before c0, a1 after c0
			detail: "order: aggregate order-0000: seq 1",
		},
		{
			name: "rolled back row",
			recs: func() []*kgo.Record {
				return append(good(), rec(msg("x0", "customer", "customer-0001", 1, nil), 0x250, 0, 4))
			},
			want:   report{Records: 6, Rows: 5, RolledBackSeen: 1},
			detail: "rolled back: row x0",
		},
		{
			name: "unknown row",
			recs: func() []*kgo.Record {
				return append(good(), rec(msg("zz", "order", "order-0000", 9, nil), 0x400, 0, 1))
			},
			want: report{Records: 6, Rows: 5, Unknown: 1},
		},
		{
			name:   "wrong key",
			recs:   func() []*kgo.Record { r := good(); r[2].Key = []byte("x"); return r },
			want:   report{Records: 5, Rows: 5, Mismatches: 1},
			detail: `key "x", want "customer-0001"`,
		},
		{
			name:   "wrong value",
			recs:   func() []*kgo.Record { r := good(); r[0].Value = []byte(`{"seq": 1, "agg": "order-0000"}`); return r },
			want:   report{Records: 5, Rows: 5, Mismatches: 1},
			detail: "content: row a0",
		},
		{
			name:   "wrong topic",
			recs:   func() []*kgo.Record { r := good(); r[4].Topic = "outbox.customer"; return r },
			want:   report{Records: 5, Rows: 5, Mismatches: 2}, // topic, and a second home
			detail: `topic "outbox.customer", want "outbox.order"`,
		},
		{
			name:   "user header lost",
			recs:   func() []*kgo.Record { r := good(); r[2].Headers = r[2].Headers[:5]; return r },
			want:   report{Records: 5, Rows: 5, Mismatches: 1},
			detail: "user headers",
		},
		{
			name: "user header added",
			recs: func() []*kgo.Record {
				r := good()
				r[0].Headers = append(r[0].Headers, kgo.RecordHeader{Key: "x", Value: []byte("y")})
				return r
			},
			want: report{Records: 5, Rows: 5, Mismatches: 1},
		},
		{
			name:   "aggregate split over partitions",
			recs:   func() []*kgo.Record { r := good(); r[4].Partition = 2; return r },
			want:   report{Records: 5, Rows: 5, Mismatches: 1},
			detail: "partition: aggregate order-0000",
		},
		{
			name:   "replay moved position",
			recs:   func() []*kgo.Record { return append(good(), rec(a2, 0x380, 0, 1)) },
			want:   report{Records: 6, Rows: 5, Duplicates: 1, Mismatches: 1},
			detail: "replay position: row a2",
		},
		{
			name:   "transaction split",
			recs:   func() []*kgo.Record { r := good(); r[1] = rec(a1, 0x180, 0, 1); return r },
			want:   report{Records: 5, Rows: 5, PositionDisorder: 2}, // index and commit LSN
			detail: "transaction: rows a0 and a1",
		},
		{
			name: "writer's commits out of LSN order",
			recs: func() []*kgo.Record {
				return []*kgo.Record{rec(b0, 0x200, 0, 4), rec(c0, 0x250, 0, 3), rec(a0, 0x300, 0, 1), rec(a1, 0x300, 1, 1), rec(a2, 0x280, 0, 1)}
			},
			want:   report{Records: 5, Rows: 5, PositionDisorder: 2}, // and on its partition
			detail: "commit order: writer 0",
		},
		{
			name:   "partition positions regress",
			recs:   func() []*kgo.Record { r := good(); r[3], r[4] = r[4], r[3]; return r },
			want:   report{Records: 5, Rows: 5, PositionDisorder: 1},
			detail: "partition order: outbox.order/1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := l.check(tt.recs())
			problems := got.Problems
			got.Problems = nil
			if got.String() != tt.want.String() {
				t.Errorf("check = %s\nwant    %s\n%s", got, &tt.want, strings.Join(problems, "\n"))
			}
			if tt.detail != "" && !strings.Contains(strings.Join(problems, "\n"), tt.detail) {
				t.Errorf("problems lack %q:\n%s", tt.detail, strings.Join(problems, "\n"))
			}
			if got.ok(true) != (tt.want.ok(true)) {
				t.Errorf("ok = %t", got.ok(true))
			}
		})
	}
}
