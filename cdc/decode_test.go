package cdc

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	"pgregory.net/rapid"

	"github.com/outbox-relay/outbox-relay/schema"
)

// wire builds a pgoutput message from its parts, big-endian as PostgreSQL
// sends them. Each method returns the extended message.
type wire []byte

func (w wire) u8(v uint8) wire   { return append(w, v) }
func (w wire) u16(v uint16) wire { return binary.BigEndian.AppendUint16(w, v) }
func (w wire) u32(v uint32) wire { return binary.BigEndian.AppendUint32(w, v) }
func (w wire) u64(v uint64) wire { return binary.BigEndian.AppendUint64(w, v) }
func (w wire) raw(p []byte) wire { return append(w, p...) }

// str appends a protocol String: the bytes and a terminating NUL.
func (w wire) str(s string) wire { return append(append(w, s...), 0) }

// beginMsg builds a Begin message. ts is microseconds since 2000-01-01 UTC.
func beginMsg(finalLSN pglogrepl.LSN, ts int64, xid uint32) []byte {
	return wire{msgBegin}.u64(uint64(finalLSN)).u64(uint64(ts)).u32(xid)
}

// commitMsg builds a Commit message. ts is microseconds since 2000-01-01 UTC.
func commitMsg(flags uint8, commitLSN, endLSN pglogrepl.LSN, ts int64) []byte {
	return wire{msgCommit}.u8(flags).u64(uint64(commitLSN)).u64(uint64(endLSN)).u64(uint64(ts))
}

// tupleCol is one column of a TupleData.
type tupleCol struct {
	kind byte // 'n', 'u', 't', 'b' or anything else for error cases
	data []byte
}

func null() tupleCol           { return tupleCol{kind: 'n'} }
func text(s string) tupleCol   { return tupleCol{kind: 't', data: []byte(s)} }
func binval(p []byte) tupleCol { return tupleCol{kind: 'b', data: p} }
func toastUnchanged() tupleCol { return tupleCol{kind: 'u'} }
func badKind(k byte) tupleCol  { return tupleCol{kind: k} }
func texts(s ...string) []tupleCol {
	cols := make([]tupleCol, len(s))
	for i, v := range s {
		cols[i] = text(v)
	}
	return cols
}

// tupleMsg builds an Insert message whose tuple marker and column count need
// not match cols. It also returns where each column's value starts in the
// message, -1 for a column without a value.
func tupleMsg(rel uint32, marker byte, ncols uint16, cols ...tupleCol) ([]byte, []int) {
	w := wire{msgInsert}.u32(rel).u8(marker).u16(ncols)
	offs := make([]int, len(cols))
	for i, c := range cols {
		w = w.u8(c.kind)
		offs[i] = -1
		if c.kind == 't' || c.kind == 'b' {
			w = w.u32(uint32(len(c.data)))
			offs[i] = len(w)
			w = w.raw(c.data)
		}
	}
	return w, offs
}

// insertMsg builds a well-formed Insert message.
func insertMsg(rel uint32, cols ...tupleCol) []byte {
	b, _ := tupleMsg(rel, 'N', uint16(len(cols)), cols...)
	return b
}

// outboxID is the relation ID of the outbox table in these tests.
const outboxID = 16394

// mustBind binds names with c or stops the test.
func mustBind(tb testing.TB, c schema.Columns, names []string) binding {
	tb.Helper()
	b, err := bind(c, "public.outbox", names)
	if err != nil {
		tb.Fatalf("bind(%q): %v", names, err)
	}
	return b
}

// A sample outbox row.
const (
	rowID        = "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e5f"
	rowAggType   = "order"
	rowAggID     = "order-42"
	rowEventType = "OrderPlaced"
	rowPayload   = `{"order_id": "order-42", "total": {"amount": "12.50", "currency": "EUR"}}`
	rowHeaders   = `{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}`
	rowCreatedAt = "2026-03-14 15:09:26.535897+00"
)

// hx formats b for a failure message, eliding all but its start.
func hx(b []byte) string {
	const shown = 48
	if len(b) <= shown {
		return hex.EncodeToString(b)
	}
	return fmt.Sprintf("%s…(%d bytes)", hex.EncodeToString(b[:shown]), len(b))
}

var errPanicked = errors.New("panicked")

// noPanic calls f, reporting a panic as a test error and errPanicked.
func noPanic(tb testing.TB, what string, f func() error) (err error) {
	tb.Helper()
	defer func() {
		if r := recover(); r != nil {
			tb.Errorf("%s panicked: %v", what, r)
			err = errPanicked
		}
	}()
	return f()
}

// checkPrefixes calls decode with every proper prefix of b, its capacity
// cut so that nothing past the prefix can be read, and wants an error from
// each.
func checkPrefixes(t *testing.T, fn string, b []byte, decode func([]byte) error) {
	t.Helper()
	for n := range len(b) {
		p := b[:n:n]
		call := fmt.Sprintf("%s(%s) (first %d of %d bytes)", fn, hx(p), n, len(b))
		if err := noPanic(t, call, func() error { return decode(p) }); err == nil {
			t.Errorf("%s = nil error, want an error", call)
		}
	}
}

// wantDecodeError checks that err is a *decodeError for message type typ
// whose reason contains why.
func wantDecodeError(t *testing.T, call string, err error, typ byte, why string) {
	t.Helper()
	var de *decodeError
	switch {
	case err == nil:
		t.Errorf("%s = nil error, want a decode error", call)
	case errors.Is(err, errPanicked):
	case !errors.As(err, &de):
		t.Errorf("%s = error %v (%T), want a *decodeError", call, err, err)
	case de.Type != typ:
		t.Errorf("%s = error for message type %q, want %q", call, de.Type, typ)
	case !strings.Contains(de.Why, why):
		t.Errorf("%s = error %q, want it to say %q", call, de.Why, why)
	}
}

// within reports whether the n bytes at p lie inside b.
func within(b []byte, p *byte, n int) bool {
	if n == 0 {
		return true
	}
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	at := uintptr(unsafe.Pointer(p))
	return at >= lo && at+uintptr(n) <= lo+uintptr(len(b))
}

// checkAliases reports every non-empty field of ev that does not point
// into b: decodeInsert documents that the event's strings and slices are
// views of the message, not copies.
func checkAliases(tb testing.TB, b []byte, ev *schema.Event) {
	tb.Helper()
	for _, f := range []struct {
		name string
		s    string
	}{{"ID", ev.ID}, {"AggregateType", ev.AggregateType}, {"AggregateID", ev.AggregateID}, {"EventType", ev.EventType}} {
		if !within(b, unsafe.StringData(f.s), len(f.s)) {
			tb.Errorf("decodeInsert(%s): %s %q is not a view of the message", hx(b), f.name, f.s)
		}
	}
	for _, f := range []struct {
		name string
		p    []byte
	}{{"Payload", ev.Payload}, {"Headers", ev.Headers}} {
		if !within(b, unsafe.SliceData(f.p), len(f.p)) {
			tb.Errorf("decodeInsert(%s): %s %q is not a view of the message", hx(b), f.name, f.p)
		}
		if cap(f.p) != len(f.p) {
			tb.Errorf("decodeInsert(%s): %s has len %d, cap %d; want its capacity cut to its length so appending cannot overwrite the message", hx(b), f.name, len(f.p), cap(f.p))
		}
	}
}

// pglogreplEvent decodes an Insert message with pglogrepl and maps its
// columns with bind: a reference decodeInsert must agree with.
func pglogreplEvent(b []byte, bind binding) (schema.Event, error) {
	m, err := pglogrepl.Parse(b)
	if err != nil {
		return schema.Event{}, err
	}
	ins, ok := m.(*pglogrepl.InsertMessage)
	if !ok {
		return schema.Event{}, fmt.Errorf("pglogrepl parsed a %T", m)
	}
	if len(ins.Tuple.Columns) != len(bind.fields) {
		return schema.Event{}, fmt.Errorf("pglogrepl read %d columns, binding has %d", len(ins.Tuple.Columns), len(bind.fields))
	}
	var ev schema.Event
	for i, c := range ins.Tuple.Columns {
		switch bind.fields[i] {
		case fieldID:
			ev.ID = string(c.Data)
		case fieldAggregateType:
			ev.AggregateType = string(c.Data)
		case fieldAggregateID:
			ev.AggregateID = string(c.Data)
		case fieldEventType:
			ev.EventType = string(c.Data)
		case fieldPayload:
			ev.Payload = c.Data
		case fieldHeaders:
			ev.Headers = c.Data
		}
	}
	return ev, nil
}

// Microseconds since 2000-01-01 UTC of some commit times.
const (
	ts2026    = 826816166535897   // 2026-03-14 15:09:26.535897 UTC
	ts2262    = 8276601600000000  // 2262-04-11 00:00:00 UTC
	tsMinTime = -9223372036854775 // the earliest time both parsers read exactly
	tsMaxTime = 8276687236854775  // the latest time both parsers read exactly
)

func TestDecodeBegin(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
		want begin
	}{
		{
			name: "commit in 2026",
			msg:  beginMsg(0x16B3748, ts2026, 771),
			want: begin{FinalLSN: 0x16B3748, CommitTime: time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC), XID: 771},
		},
		{
			name: "zero",
			msg:  beginMsg(0, 0, 0),
			want: begin{CommitTime: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)},
		},
		{
			name: "before 2000",
			msg:  beginMsg(1, -1, 1),
			want: begin{FinalLSN: 1, CommitTime: time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC), XID: 1},
		},
		{
			name: "greatest LSN and xid",
			msg:  beginMsg(0xFFFFFFFFFFFFFFFF, ts2262, 0xFFFFFFFF),
			want: begin{FinalLSN: 0xFFFFFFFFFFFFFFFF, CommitTime: time.Date(2262, 4, 11, 0, 0, 0, 0, time.UTC), XID: 0xFFFFFFFF},
		},
		{
			name: "high bits set",
			msg:  beginMsg(0x80000001_00000002, ts2026, 0x80000003),
			want: begin{FinalLSN: 0x80000001_00000002, CommitTime: time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC), XID: 0x80000003},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeBegin(tt.msg)
			if err != nil {
				t.Fatalf("decodeBegin(%x): %v", tt.msg, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decodeBegin(%x) = %+v, want %+v (-want +got):\n%s", tt.msg, got, tt.want, diff)
			}
			if ref, err := pglogreplBegin(tt.msg); err != nil {
				t.Errorf("pglogrepl.Parse(%x): %v", tt.msg, err)
			} else if !cmp.Equal(ref, got) {
				t.Errorf("decodeBegin(%x) = %+v, want %+v as pglogrepl reads it", tt.msg, got, ref)
			}
			checkPrefixes(t, "decodeBegin", tt.msg, func(p []byte) error {
				_, err := decodeBegin(p)
				return err
			})
		})
	}
}

// pglogreplBegin decodes a Begin message with pglogrepl.
func pglogreplBegin(b []byte) (begin, error) {
	m, err := pglogrepl.Parse(b)
	if err != nil {
		return begin{}, err
	}
	bm, ok := m.(*pglogrepl.BeginMessage)
	if !ok {
		return begin{}, fmt.Errorf("pglogrepl parsed a %T", m)
	}
	return begin{FinalLSN: bm.FinalLSN, CommitTime: bm.CommitTime, XID: bm.Xid}, nil
}

func TestDecodeBeginMatchesPglogrepl(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		msg := beginMsg(
			pglogrepl.LSN(rapid.Uint64().Draw(t, "lsn")),
			rapid.Int64Range(tsMinTime, tsMaxTime).Draw(t, "ts"),
			rapid.Uint32().Draw(t, "xid"),
		)
		got, err := decodeBegin(msg)
		if err != nil {
			t.Fatalf("decodeBegin(%x): %v", msg, err)
		}
		want, err := pglogreplBegin(msg)
		if err != nil {
			t.Fatalf("pglogrepl.Parse(%x): %v", msg, err)
		}
		if !cmp.Equal(want, got) {
			t.Fatalf("decodeBegin(%x) = %+v, want %+v as pglogrepl reads it", msg, got, want)
		}
	})
}

func TestDecodeCommit(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
		want commit
	}{
		{
			name: "commit in 2026",
			msg:  commitMsg(0, 0x16B3748, 0x16B3778, ts2026),
			want: commit{CommitLSN: 0x16B3748, EndLSN: 0x16B3778, CommitTime: time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)},
		},
		{
			name: "zero",
			msg:  commitMsg(0, 0, 0, 0),
			want: commit{CommitTime: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)},
		},
		{
			name: "before 2000",
			msg:  commitMsg(0, 1, 2, -1),
			want: commit{CommitLSN: 1, EndLSN: 2, CommitTime: time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC)},
		},
		{
			name: "greatest LSNs",
			msg:  commitMsg(0, 0xFFFFFFFFFFFFFFF0, 0xFFFFFFFFFFFFFFFF, ts2262),
			want: commit{CommitLSN: 0xFFFFFFFFFFFFFFF0, EndLSN: 0xFFFFFFFFFFFFFFFF, CommitTime: time.Date(2262, 4, 11, 0, 0, 0, 0, time.UTC)},
		},
		{
			name: "LSNs across a segment boundary",
			msg:  commitMsg(0, 0x1_FFFFFFF8, 0x2_00000028, ts2026),
			want: commit{CommitLSN: 0x1_FFFFFFF8, EndLSN: 0x2_00000028, CommitTime: time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeCommit(tt.msg)
			if err != nil {
				t.Fatalf("decodeCommit(%x): %v", tt.msg, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decodeCommit(%x) = %+v, want %+v (-want +got):\n%s", tt.msg, got, tt.want, diff)
			}
			if ref, err := pglogreplCommit(tt.msg); err != nil {
				t.Errorf("pglogrepl.Parse(%x): %v", tt.msg, err)
			} else if !cmp.Equal(ref, got) {
				t.Errorf("decodeCommit(%x) = %+v, want %+v as pglogrepl reads it", tt.msg, got, ref)
			}
			checkPrefixes(t, "decodeCommit", tt.msg, func(p []byte) error {
				_, err := decodeCommit(p)
				return err
			})
		})
	}
}

// pglogreplCommit decodes a Commit message with pglogrepl.
func pglogreplCommit(b []byte) (commit, error) {
	m, err := pglogrepl.Parse(b)
	if err != nil {
		return commit{}, err
	}
	cm, ok := m.(*pglogrepl.CommitMessage)
	if !ok {
		return commit{}, fmt.Errorf("pglogrepl parsed a %T", m)
	}
	return commit{CommitLSN: cm.CommitLSN, EndLSN: cm.TransactionEndLSN, CommitTime: cm.CommitTime}, nil
}

func TestDecodeCommitMatchesPglogrepl(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		msg := commitMsg(0,
			pglogrepl.LSN(rapid.Uint64().Draw(t, "commit_lsn")),
			pglogrepl.LSN(rapid.Uint64().Draw(t, "end_lsn")),
			rapid.Int64Range(tsMinTime, tsMaxTime).Draw(t, "ts"),
		)
		got, err := decodeCommit(msg)
		if err != nil {
			t.Fatalf("decodeCommit(%x): %v", msg, err)
		}
		want, err := pglogreplCommit(msg)
		if err != nil {
			t.Fatalf("pglogrepl.Parse(%x): %v", msg, err)
		}
		if !cmp.Equal(want, got) {
			t.Fatalf("decodeCommit(%x) = %+v, want %+v as pglogrepl reads it", msg, got, want)
		}
	})
}

func TestInsertRelation(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
		want uint32
	}{
		{"outbox row", insertMsg(outboxID, texts(rowID, rowAggType, rowAggID, rowEventType, rowPayload, rowHeaders, rowCreatedAt)...), outboxID},
		{"relation zero", insertMsg(0), 0},
		{"greatest id", insertMsg(0xFFFFFFFF, null()), 0xFFFFFFFF},
		{"id with high bit", insertMsg(0x80000001, text("x")), 0x80000001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := insertRelation(tt.msg)
			if err != nil {
				t.Fatalf("insertRelation(%x): %v", tt.msg, err)
			}
			if got != tt.want {
				t.Errorf("insertRelation(%x) = %d, want %d", tt.msg, got, tt.want)
			}
			// insertRelation reads only the relation ID (and wants the
			// tuple marker after it): a prefix holding both may succeed,
			// but only with the right ID; a shorter one must fail.
			for n := range len(tt.msg) {
				p := tt.msg[:n:n]
				var id uint32
				call := fmt.Sprintf("insertRelation(%x)", p)
				err := noPanic(t, call, func() (err error) {
					id, err = insertRelation(p)
					return err
				})
				switch {
				case errors.Is(err, errPanicked):
				case n < 1+4+1 && err == nil:
					t.Errorf("%s = %d, nil error; want an error", call, id)
				case err != nil:
					wantDecodeError(t, call, err, msgInsert, "relation id")
				case id != tt.want:
					t.Errorf("%s = %d, want %d", call, id, tt.want)
				}
			}
		})
	}
}

type insertCase struct {
	name string
	bind binding
	msg  []byte
	want schema.Event
}

func insertCases(tb testing.TB) []insertCase {
	defaultBind := mustBind(tb, schema.DefaultColumns, colNames(outboxColumns))
	full := schema.Event{
		ID: rowID, AggregateType: rowAggType, AggregateID: rowAggID, EventType: rowEventType,
		Payload: []byte(rowPayload), Headers: []byte(rowHeaders),
	}
	bigPayload := `{"blob": "` + strings.Repeat("0123456789abcdef", 100*1024/16) + `"}`
	extraNames := []string{"tenant", "payload", "created_at", "event_type", "trace", "id", "headers", "aggregate_id", "aggregate_type"}
	noHeaders := schema.DefaultColumns
	noHeaders.Headers = ""

	return []insertCase{
		{
			name: "full row",
			bind: defaultBind,
			msg:  insertMsg(outboxID, texts(rowID, rowAggType, rowAggID, rowEventType, rowPayload, rowHeaders, rowCreatedAt)...),
			want: full,
		},
		{
			name: "headers NULL",
			bind: defaultBind,
			msg: insertMsg(outboxID,
				text(rowID), text(rowAggType), text(rowAggID), text(rowEventType), text(rowPayload), null(), text(rowCreatedAt)),
			want: schema.Event{ID: rowID, AggregateType: rowAggType, AggregateID: rowAggID, EventType: rowEventType, Payload: []byte(rowPayload)},
		},
		{
			name: "payload NULL",
			bind: defaultBind,
			msg: insertMsg(outboxID,
				text(rowID), text(rowAggType), text(rowAggID), text(rowEventType), null(), text(rowHeaders), text(rowCreatedAt)),
			want: schema.Event{ID: rowID, AggregateType: rowAggType, AggregateID: rowAggID, EventType: rowEventType, Headers: []byte(rowHeaders)},
		},
		{
			name: "every column NULL",
			bind: defaultBind,
			msg:  insertMsg(outboxID, null(), null(), null(), null(), null(), null(), null()),
			want: schema.Event{},
		},
		{
			name: "empty strings",
			bind: defaultBind,
			msg:  insertMsg(outboxID, texts("", "", "", "", "", "", "")...),
			want: schema.Event{Payload: []byte{}, Headers: []byte{}},
		},
		{
			name: "unicode",
			bind: defaultBind,
			msg: insertMsg(outboxID, texts(rowID, "commande", "client-Ωμέγα-日本-🚀", "CommandePassée",
				`{"note": "crème brûlée ✓", "emoji": "🚀"}`, `{"langue": "français"}`, rowCreatedAt)...),
			want: schema.Event{
				ID: rowID, AggregateType: "commande", AggregateID: "client-Ωμέγα-日本-🚀", EventType: "CommandePassée",
				Payload: []byte(`{"note": "crème brûlée ✓", "emoji": "🚀"}`), Headers: []byte(`{"langue": "français"}`),
			},
		},
		{
			name: "values holding zero bytes and kind letters",
			bind: defaultBind,
			msg:  insertMsg(outboxID, texts("a\x00b", "n", "t", "u", "\x00\x00\x00\x05", "b", "")...),
			want: schema.Event{ID: "a\x00b", AggregateType: "n", AggregateID: "t", EventType: "u", Payload: []byte("\x00\x00\x00\x05"), Headers: []byte("b")},
		},
		{
			name: "payload of 100 KB",
			bind: defaultBind,
			msg:  insertMsg(outboxID, texts(rowID, rowAggType, rowAggID, rowEventType, bigPayload, rowHeaders, rowCreatedAt)...),
			want: schema.Event{
				ID: rowID, AggregateType: rowAggType, AggregateID: rowAggID, EventType: rowEventType,
				Payload: []byte(bigPayload), Headers: []byte(rowHeaders),
			},
		},
		{
			name: "binary format values",
			bind: defaultBind,
			msg: insertMsg(outboxID, binval([]byte{0x01, 0x90, 0xf1, 0xc2}), text(rowAggType), text(rowAggID), text(rowEventType),
				binval(append([]byte{1}, rowPayload...)), null(), binval([]byte{0, 2, 0xde, 0xad, 0xbe, 0xef, 0, 0})),
			want: schema.Event{
				ID: "\x01\x90\xf1\xc2", AggregateType: rowAggType, AggregateID: rowAggID, EventType: rowEventType,
				Payload: append([]byte{1}, rowPayload...),
			},
		},
		{
			name: "extra columns in another order",
			bind: mustBind(tb, schema.DefaultColumns, extraNames),
			msg:  insertMsg(outboxID, texts("acme", rowPayload, rowCreatedAt, rowEventType, "trace-1", rowID, rowHeaders, rowAggID, rowAggType)...),
			want: full,
		},
		{
			name: "extra columns NULL",
			bind: mustBind(tb, schema.DefaultColumns, extraNames),
			msg: insertMsg(outboxID, null(), text(rowPayload), null(), text(rowEventType), null(),
				text(rowID), text(rowHeaders), text(rowAggID), text(rowAggType)),
			want: full,
		},
		{
			name: "headers column present but not mapped",
			bind: mustBind(tb, noHeaders, colNames(outboxColumns)),
			msg:  insertMsg(outboxID, texts(rowID, rowAggType, rowAggID, rowEventType, rowPayload, rowHeaders, rowCreatedAt)...),
			want: schema.Event{ID: rowID, AggregateType: rowAggType, AggregateID: rowAggID, EventType: rowEventType, Payload: []byte(rowPayload)},
		},
		{
			name: "Debezium columns",
			bind: mustBind(tb, schema.DebeziumColumns, colNames(debeziumColumns)),
			msg: insertMsg(24601, texts(rowID, "Order", "1001", "OrderCreated",
				`{"id": 1001, "customerId": 1}`, "2026-03-14 15:09:26.535897+00", "traceparent=00-4bf9-00f0-01")...),
			want: schema.Event{
				ID: rowID, AggregateType: "Order", AggregateID: "1001", EventType: "OrderCreated",
				Payload: []byte(`{"id": 1001, "customerId": 1}`),
			},
		},
		{
			name: "Debezium columns, table also has a headers column",
			bind: mustBind(tb, schema.DebeziumColumns, append(colNames(debeziumColumns), "headers")),
			msg: insertMsg(24601, texts(rowID, "Order", "1001", "OrderCreated",
				`{"id": 1001}`, "2026-03-14 15:09:26.535897+00", "", rowHeaders)...),
			want: schema.Event{ID: rowID, AggregateType: "Order", AggregateID: "1001", EventType: "OrderCreated", Payload: []byte(`{"id": 1001}`)},
		},
		{
			name: "no columns",
			msg:  insertMsg(outboxID),
			want: schema.Event{},
		},
	}
}

func TestDecodeInsert(t *testing.T) {
	for _, tt := range insertCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			var got schema.Event
			if err := decodeInsert(tt.msg, tt.bind, &got); err != nil {
				t.Fatalf("decodeInsert(%s): %v", hx(tt.msg), err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decodeInsert(%s) = %+v, want %+v (-want +got):\n%s", hx(tt.msg), got, tt.want, diff)
			}
			checkAliases(t, tt.msg, &got)
			if len(tt.msg) > 1+4+1+2 { // pglogrepl wants at least one byte of tuple
				ref, err := pglogreplEvent(tt.msg, tt.bind)
				if err != nil {
					t.Errorf("pglogrepl.Parse(%s): %v", hx(tt.msg), err)
				} else if diff := cmp.Diff(ref, got); diff != "" {
					t.Errorf("decodeInsert(%s) disagrees with pglogrepl (-pglogrepl +decodeInsert):\n%s", hx(tt.msg), diff)
				}
			}
			checkPrefixes(t, "decodeInsert", tt.msg, func(p []byte) error {
				var ev schema.Event
				return decodeInsert(p, tt.bind, &ev)
			})
		})
	}
}

func TestDecodeInsertReusedEvent(t *testing.T) {
	// The stream decodes every row into the same Event: nothing of an
	// earlier row may survive into a later one.
	first := insertMsg(outboxID, texts(rowID, rowAggType, rowAggID, rowEventType, rowPayload, rowHeaders, rowCreatedAt)...)
	noHeaders := schema.DefaultColumns
	noHeaders.Headers = ""
	tests := []struct {
		name string
		bind binding
		msg  []byte
		want schema.Event
	}{
		{
			name: "NULL columns",
			bind: mustBind(t, schema.DefaultColumns, colNames(outboxColumns)),
			msg:  insertMsg(outboxID, text("0190f1c2-0000-7000-8000-000000000002"), text(""), null(), text("Shipped"), null(), null(), null()),
			want: schema.Event{ID: "0190f1c2-0000-7000-8000-000000000002", EventType: "Shipped"},
		},
		{
			name: "headers no longer mapped",
			bind: mustBind(t, noHeaders, colNames(outboxColumns)),
			msg:  insertMsg(outboxID, texts("0190f1c2-0000-7000-8000-000000000003", "order", "order-43", "Paid", "{}", rowHeaders, rowCreatedAt)...),
			want: schema.Event{ID: "0190f1c2-0000-7000-8000-000000000003", AggregateType: "order", AggregateID: "order-43", EventType: "Paid", Payload: []byte("{}")},
		},
		{
			name: "other columns",
			bind: mustBind(t, schema.DefaultColumns, []string{"created_at", "payload", "event_type", "aggregate_id", "aggregate_type", "id", "headers"}),
			msg:  insertMsg(outboxID, texts(rowCreatedAt, "[]", "Paid", "order-44", "order", "0190f1c2-0000-7000-8000-000000000004", "{}")...),
			want: schema.Event{ID: "0190f1c2-0000-7000-8000-000000000004", AggregateType: "order", AggregateID: "order-44", EventType: "Paid", Payload: []byte("[]"), Headers: []byte("{}")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ev schema.Event
			if err := decodeInsert(first, mustBind(t, schema.DefaultColumns, colNames(outboxColumns)), &ev); err != nil {
				t.Fatalf("decodeInsert(%s): %v", hx(first), err)
			}
			ev.Table, ev.Position, ev.CommitTime = "public.outbox", schema.Position{CommitLSN: 0x16B3748, Index: 3}, time.Now()
			if err := decodeInsert(tt.msg, tt.bind, &ev); err != nil {
				t.Fatalf("decodeInsert(%s): %v", hx(tt.msg), err)
			}
			// Table, Position and CommitTime belong to the stream, which
			// sets them after decoding.
			got := schema.Event{ID: ev.ID, AggregateType: ev.AggregateType, AggregateID: ev.AggregateID, EventType: ev.EventType, Payload: ev.Payload, Headers: ev.Headers}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decodeInsert(%s) into a used event = %+v, want %+v (-want +got):\n%s", hx(tt.msg), got, tt.want, diff)
			}
		})
	}
}

func TestDecodeInsertAliases(t *testing.T) {
	bind := mustBind(t, schema.DefaultColumns, colNames(outboxColumns))
	msg, offs := tupleMsg(outboxID, 'N', 7, texts(rowID, rowAggType, rowAggID, rowEventType, rowPayload, rowHeaders, rowCreatedAt)...)
	orig := bytes.Clone(msg)
	var ev schema.Event
	if err := decodeInsert(msg, bind, &ev); err != nil {
		t.Fatalf("decodeInsert(%s): %v", hx(msg), err)
	}

	t.Run("fields are views of their columns", func(t *testing.T) {
		for _, f := range []struct {
			name string
			p    *byte
			n    int
			col  int
			vlen int
		}{
			{"ID", unsafe.StringData(ev.ID), len(ev.ID), 0, len(rowID)},
			{"AggregateType", unsafe.StringData(ev.AggregateType), len(ev.AggregateType), 1, len(rowAggType)},
			{"AggregateID", unsafe.StringData(ev.AggregateID), len(ev.AggregateID), 2, len(rowAggID)},
			{"EventType", unsafe.StringData(ev.EventType), len(ev.EventType), 3, len(rowEventType)},
			{"Payload", unsafe.SliceData(ev.Payload), len(ev.Payload), 4, len(rowPayload)},
			{"Headers", unsafe.SliceData(ev.Headers), len(ev.Headers), 5, len(rowHeaders)},
		} {
			if f.p != &msg[offs[f.col]] || f.n != f.vlen {
				t.Errorf("decodeInsert(%s): %s is %d bytes at %p, want a view of the %d bytes of column %d at %p",
					hx(msg), f.name, f.n, f.p, f.vlen, f.col, &msg[offs[f.col]])
			}
		}
	})

	t.Run("appending to slices leaves the message alone", func(t *testing.T) {
		if cap(ev.Payload) != len(ev.Payload) || cap(ev.Headers) != len(ev.Headers) {
			t.Errorf("decodeInsert(%s): Payload len %d cap %d, Headers len %d cap %d; want capacities equal to lengths",
				hx(msg), len(ev.Payload), cap(ev.Payload), len(ev.Headers), cap(ev.Headers))
		}
		_ = append(ev.Payload, "!!!!!!!!"...)
		_ = append(ev.Headers, "!!!!!!!!"...)
		if !bytes.Equal(msg, orig) {
			t.Errorf("appending to the decoded Payload and Headers changed the message:\n got %x\nwant %x", msg, orig)
		}
	})

	t.Run("decoding does not write to the message", func(t *testing.T) {
		if !bytes.Equal(msg, orig) {
			t.Errorf("decodeInsert changed its input:\n got %x\nwant %x", msg, orig)
		}
	})
}

func TestDecodeInsertErrors(t *testing.T) {
	bind := mustBind(t, schema.DefaultColumns, colNames(outboxColumns))
	row := func(cols ...tupleCol) []tupleCol {
		full := []tupleCol{text(rowID), text(rowAggType), text(rowAggID), text(rowEventType), text(rowPayload), text(rowHeaders), text(rowCreatedAt)}
		copy(full, cols)
		return full
	}
	withMarker := func(m byte) []byte {
		b, _ := tupleMsg(outboxID, m, 7, row()...)
		return b
	}
	withLength := func(col int, n uint32) []byte {
		b, offs := tupleMsg(outboxID, 'N', 7, row()...)
		binary.BigEndian.PutUint32(b[offs[col]-4:], n)
		return b
	}
	setCol := func(i int, c tupleCol) []byte {
		cols := row()
		cols[i] = c
		return insertMsg(outboxID, cols...)
	}
	tests := []struct {
		name string
		msg  []byte
		why  string
	}{
		{"empty", nil, "tuple header"},
		{"type only", []byte{msgInsert}, "tuple header"},
		{"no column count", wire{msgInsert}.u32(outboxID).u8('N'), "tuple header"},
		{"old key tuple marker", withMarker('K'), "tuple marker 'K'"},
		{"old row tuple marker", withMarker('O'), "tuple marker 'O'"},
		{"lower-case marker", withMarker('n'), "tuple marker 'n'"},
		{"zero marker", withMarker(0), "tuple marker"},
		{"fewer columns than the relation", insertMsg(outboxID, row()[:6]...), "tuple has 6 columns, relation has 7"},
		{"more columns than the relation", insertMsg(outboxID, append(row(), text("extra"))...), "tuple has 8 columns, relation has 7"},
		{"no columns", insertMsg(outboxID), "tuple has 0 columns, relation has 7"},
		{"count says more columns than sent", func() []byte { b, _ := tupleMsg(outboxID, 'N', 7, row()[:6]...); return b }(), "column kind"},
		{"unknown kind", setCol(3, badKind('x')), "column 3 has unknown kind 'x'"},
		{"zero kind", setCol(0, badKind(0)), "column 0 has unknown kind"},
		{"upper-case kind", setCol(4, tupleCol{kind: 'T', data: []byte(rowPayload)}), "column 4 has unknown kind 'T'"},
		{"unchanged TOAST value", setCol(5, toastUnchanged()), "column 5 is an unchanged TOAST value"},
		{"unchanged TOAST value in an unmapped column", setCol(6, toastUnchanged()), "column 6 is an unchanged TOAST value"},
		{"length past the end", withLength(4, uint32(len(rowPayload)+len(rowHeaders)+100)), "column"},
		{"length 2^31-1", withLength(4, 0x7FFFFFFF), "column value"},
		{"length 2^31", withLength(4, 0x80000000), "column value"},
		{"length 2^32-1", withLength(6, 0xFFFFFFFF), "column value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			call := fmt.Sprintf("decodeInsert(%s)", hx(tt.msg))
			err := noPanic(t, call, func() error {
				var ev schema.Event
				return decodeInsert(tt.msg, bind, &ev)
			})
			wantDecodeError(t, call, err, msgInsert, tt.why)
		})
	}
}

func TestDecodeInsertAllocs(t *testing.T) {
	msg, bind := benchRow(t)
	var ev schema.Event
	allocs := testing.AllocsPerRun(100, func() {
		if err := decodeInsert(msg, bind, &ev); err != nil {
			t.Fatalf("decodeInsert(%s): %v", hx(msg), err)
		}
	})
	if allocs != 0 {
		t.Errorf("decodeInsert allocates %v times per row, want 0", allocs)
	}
}

// benchRow returns a realistic outbox row of 7 columns with a 200-byte
// payload, and its binding.
func benchRow(tb testing.TB) ([]byte, binding) {
	const head = `{"order_id":"order-42","customer_id":"c-1001","currency":"EUR","note":"`
	payload := head + strings.Repeat("x", 200-len(head)-2) + `"}`
	if len(payload) != 200 {
		tb.Fatalf("payload is %d bytes, want 200", len(payload))
	}
	msg := insertMsg(outboxID, texts(rowID, rowAggType, rowAggID, rowEventType, payload, rowHeaders, rowCreatedAt)...)
	return msg, mustBind(tb, schema.DefaultColumns, colNames(outboxColumns))
}

func BenchmarkDecodeInsert(b *testing.B) {
	msg, bind := benchRow(b)
	var ev schema.Event
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if err := decodeInsert(msg, bind, &ev); err != nil {
			b.Fatalf("decodeInsert(%s): %v", hx(msg), err)
		}
	}
}

func FuzzDecodeInsert(f *testing.F) {
	for _, tc := range insertCases(f) {
		if len(tc.msg) > 4096 {
			continue
		}
		layout := make([]byte, len(tc.bind.fields))
		for i, fd := range tc.bind.fields {
			layout[i] = byte(fd) << 1 // even first byte: bind as many columns as the tuple says
		}
		f.Add(tc.msg, layout)
	}
	f.Add(insertMsg(outboxID, null(), toastUnchanged(), badKind('x')), []byte{2, 4, 6})
	f.Add(insertMsg(outboxID, texts("a", "b")...), []byte{1, 2, 4, 6})

	f.Fuzz(func(t *testing.T, msg, layout []byte) {
		// The stream hands decodeInsert only messages of type 'I'.
		if len(msg) > 0 && msg[0] != msgInsert {
			msg = append([]byte{msgInsert}, msg[1:]...)
		}
		// layout picks the binding: its bytes, in turn, name the field of
		// each column. An even first byte binds as many columns as the
		// tuple claims, so most inputs get past the column count check; an
		// odd one binds len(layout) columns.
		n := len(layout)
		if len(msg) >= 8 && (len(layout) == 0 || layout[0]&1 == 0) {
			n = int(binary.BigEndian.Uint16(msg[6:]))
		}
		bind := binding{fields: make([]eventField, n)}
		for i := range n {
			if len(layout) > 0 {
				bind.fields[i] = eventField(layout[i%len(layout)]>>1) % (fieldHeaders + 1)
			}
		}

		orig := bytes.Clone(msg)
		var ev schema.Event
		err := decodeInsert(msg, bind, &ev)
		if !bytes.Equal(msg, orig) {
			t.Fatalf("decodeInsert changed its input:\n got %x\nwant %x", msg, orig)
		}
		if err != nil {
			var de *decodeError
			if !errors.As(err, &de) || de.Type != msgInsert {
				t.Fatalf("decodeInsert(%x) = error %v (%T), want a *decodeError for 'I'", msg, err, err)
			}
			return
		}
		checkAliases(t, msg, &ev)
		if id, err := insertRelation(msg); err != nil || id != binary.BigEndian.Uint32(msg[1:]) {
			t.Fatalf("insertRelation(%x) = %d, %v after decodeInsert accepted it", msg, id, err)
		}
		if len(msg) > 1+4+1+2 {
			ref, err := pglogreplEvent(msg, bind)
			if err != nil {
				t.Fatalf("decodeInsert(%x) accepted what pglogrepl rejects: %v", msg, err)
			}
			if diff := cmp.Diff(ref, ev); diff != "" {
				t.Fatalf("decodeInsert(%x) disagrees with pglogrepl (-pglogrepl +decodeInsert):\n%s", msg, diff)
			}
		}
	})
}
