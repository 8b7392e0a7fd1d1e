package cdc

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	"pgregory.net/rapid"

	"github.com/outbox-relay/outbox-relay/schema"
)

// relCol is one column of a Relation message.
type relCol struct {
	flags  uint8 // 1 marks a column of the replica identity
	name   string
	oid    uint32
	typmod int32
}

// Type OIDs of the columns the tests describe.
const (
	oidInt8        = 20
	oidText        = 25
	oidVarchar     = 1043
	oidTimestamptz = 1184
	oidUUID        = 2950
	oidJSONB       = 3802
)

// relationMsg builds a Relation message.
func relationMsg(id uint32, namespace, name string, identity byte, cols ...relCol) []byte {
	return relationMsgN(id, namespace, name, identity, uint16(len(cols)), cols...)
}

// relationMsgN builds a Relation message whose column count need not match
// cols.
func relationMsgN(id uint32, namespace, name string, identity byte, ncols uint16, cols ...relCol) []byte {
	w := wire{msgRelation}.u32(id).str(namespace).str(name).u8(identity).u16(ncols)
	for _, c := range cols {
		w = w.u8(c.flags).str(c.name).u32(c.oid).u32(uint32(c.typmod))
	}
	return w
}

// outboxColumns describes the table setup creates, in table order.
var outboxColumns = []relCol{
	{1, "id", oidUUID, -1},
	{0, "aggregate_type", oidText, -1},
	{0, "aggregate_id", oidText, -1},
	{0, "event_type", oidText, -1},
	{0, "payload", oidJSONB, -1},
	{0, "headers", oidJSONB, -1},
	{0, "created_at", oidTimestamptz, -1},
}

// debeziumColumns describes the table Debezium's outbox documentation
// creates, with the optional timestamp and tracing columns.
var debeziumColumns = []relCol{
	{1, "id", oidUUID, -1},
	{0, "aggregatetype", oidVarchar, 255 + 4},
	{0, "aggregateid", oidVarchar, 255 + 4},
	{0, "type", oidVarchar, 255 + 4},
	{0, "payload", oidJSONB, -1},
	{0, "timestamp", oidTimestamptz, -1},
	{0, "tracingspancontext", oidVarchar, 256 + 4},
}

func colNames(cols []relCol) []string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.name
	}
	return names
}

// fieldsOf names the Event field of each column, for expected bindings.
func fieldsOf(f ...eventField) binding { return binding{fields: f} }

// Short names of the fields, for expected bindings.
const (
	fNone    = fieldNone
	fID      = fieldID
	fAggType = fieldAggregateType
	fAggID   = fieldAggregateID
	fEvType  = fieldEventType
	fPayload = fieldPayload
	fHeaders = fieldHeaders
)

// putAll decodes each Relation message and records it in rs.
func putAll(t *testing.T, rs *relations, msgs ...[]byte) error {
	t.Helper()
	for _, m := range msgs {
		r, err := decodeRelation(m)
		if err != nil {
			t.Fatalf("decodeRelation(%x): %v", m, err)
		}
		if err := rs.put(r); err != nil {
			return err
		}
	}
	return nil
}

func TestRelations(t *testing.T) {
	withTenant := append(slices.Clone(outboxColumns), relCol{0, "tenant", oidText, -1})
	// DROP COLUMN headers; ADD COLUMN headers jsonb: the column moves last.
	headersLast := append(slices.Concat(outboxColumns[:5], outboxColumns[6:]), outboxColumns[5])
	reordered := []relCol{
		{0, "created_at", oidTimestamptz, -1}, {0, "payload", oidJSONB, -1}, {0, "tenant", oidText, -1},
		{0, "event_type", oidText, -1}, {1, "id", oidUUID, -1}, {0, "headers", oidJSONB, -1},
		{0, "aggregate_id", oidText, -1}, {0, "trace", oidText, -1}, {0, "aggregate_type", oidText, -1},
	}
	outbox := relationMsg(outboxID, "public", "outbox", 'd', outboxColumns...)
	orders := relationMsg(16500, "public", "orders", 'd', relCol{1, "id", oidInt8, -1}, relCol{0, "total", oidText, -1})

	tests := []struct {
		name    string
		table   schema.Table
		columns schema.Columns
		puts    [][]byte
		get     uint32
		want    *relationInfo
	}{
		{
			name: "outbox table binds",
			puts: [][]byte{outbox},
			get:  outboxID,
			want: &relationInfo{name: "public.outbox", relayed: true, bind: fieldsOf(fID, fAggType, fAggID, fEvType, fPayload, fHeaders, fNone)},
		},
		{
			name: "outbox table among others",
			puts: [][]byte{orders, outbox, relationMsg(16501, "audit", "outbox", 'f', outboxColumns...)},
			get:  outboxID,
			want: &relationInfo{name: "public.outbox", relayed: true, bind: fieldsOf(fID, fAggType, fAggID, fEvType, fPayload, fHeaders, fNone)},
		},
		{
			name: "extra columns in another order",
			puts: [][]byte{relationMsg(outboxID, "public", "outbox", 'd', reordered...)},
			get:  outboxID,
			want: &relationInfo{name: "public.outbox", relayed: true, bind: fieldsOf(fNone, fPayload, fNone, fEvType, fID, fHeaders, fAggID, fNone, fAggType)},
		},
		{
			name:    "Debezium table with Debezium columns",
			table:   schema.Table{Schema: "inventory", Name: "outboxevent"},
			columns: schema.DebeziumColumns,
			puts:    [][]byte{relationMsg(24601, "inventory", "outboxevent", 'd', debeziumColumns...)},
			get:     24601,
			want:    &relationInfo{name: "inventory.outboxevent", relayed: true, bind: fieldsOf(fID, fAggType, fAggID, fEvType, fPayload, fNone, fNone)},
		},
		{
			name:    "unicode table name",
			table:   schema.Table{Schema: "ventes", Name: "événements_日本"},
			columns: schema.DefaultColumns,
			puts:    [][]byte{relationMsg(16402, "ventes", "événements_日本", 'd', outboxColumns...)},
			get:     16402,
			want:    &relationInfo{name: "ventes.événements_日本", relayed: true, bind: fieldsOf(fID, fAggType, fAggID, fEvType, fPayload, fHeaders, fNone)},
		},
		{
			name: "another table is read past",
			puts: [][]byte{outbox, orders},
			get:  16500,
		},
		{
			name: "outbox of another schema is read past",
			puts: [][]byte{relationMsg(16501, "audit", "outbox", 'd', outboxColumns...), outbox},
			get:  16501,
		},
		{
			name:  "names are compared exactly",
			table: schema.Table{Schema: "public", Name: "Outbox"},
			puts:  [][]byte{outbox},
			get:   outboxID,
		},
		{
			name: "another table lacking the mapped columns is not checked",
			puts: [][]byte{relationMsg(16503, "public", "audit_log", 'n', relCol{0, "at", oidTimestamptz, -1})},
			get:  16503,
		},
		{
			name: "ADD COLUMN replaces the binding",
			puts: [][]byte{outbox, relationMsg(outboxID, "public", "outbox", 'd', withTenant...)},
			get:  outboxID,
			want: &relationInfo{name: "public.outbox", relayed: true, bind: fieldsOf(fID, fAggType, fAggID, fEvType, fPayload, fHeaders, fNone, fNone)},
		},
		{
			name: "a column moved last replaces the binding",
			puts: [][]byte{outbox, relationMsg(outboxID, "public", "outbox", 'd', headersLast...)},
			get:  outboxID,
			want: &relationInfo{name: "public.outbox", relayed: true, bind: fieldsOf(fID, fAggType, fAggID, fEvType, fPayload, fNone, fHeaders)},
		},
		{
			name: "a reordered table replaces the binding",
			puts: [][]byte{outbox, relationMsg(outboxID, "public", "outbox", 'd', reordered...)},
			get:  outboxID,
			want: &relationInfo{name: "public.outbox", relayed: true, bind: fieldsOf(fNone, fPayload, fNone, fEvType, fID, fHeaders, fAggID, fNone, fAggType)},
		},
		{
			name: "a table renamed to the outbox is bound",
			puts: [][]byte{relationMsg(outboxID, "public", "outbox_new", 'd', outboxColumns...), outbox},
			get:  outboxID,
			want: &relationInfo{name: "public.outbox", relayed: true, bind: fieldsOf(fID, fAggType, fAggID, fEvType, fPayload, fHeaders, fNone)},
		},
		{
			name: "a later description of another table leaves the outbox alone",
			puts: [][]byte{outbox, orders, relationMsg(16500, "public", "orders", 'd', relCol{1, "id", oidInt8, -1})},
			get:  outboxID,
			want: &relationInfo{name: "public.outbox", relayed: true, bind: fieldsOf(fID, fAggType, fAggID, fEvType, fPayload, fHeaders, fNone)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := relations{table: schema.DefaultTable, columns: schema.DefaultColumns}
			if tt.table != (schema.Table{}) {
				rs.table = tt.table
			}
			if tt.columns != (schema.Columns{}) {
				rs.columns = tt.columns
			}
			if err := putAll(t, &rs, tt.puts...); err != nil {
				t.Fatalf("put: %v", err)
			}
			got, err := rs.get(tt.get)
			if err != nil {
				t.Fatalf("get(%d): %v", tt.get, err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(relationInfo{}, binding{})); diff != "" {
				t.Errorf("get(%d) = %+v, want %+v (-want +got):\n%s", tt.get, got, tt.want, diff)
			}
		})
	}
}

func TestRelationsUnknownID(t *testing.T) {
	tests := []struct {
		name string
		puts [][]byte
		get  uint32
	}{
		{"nothing described", nil, outboxID},
		{"another id described", [][]byte{relationMsg(outboxID, "public", "outbox", 'd', outboxColumns...)}, outboxID + 1},
		{"id zero", [][]byte{relationMsg(outboxID, "public", "outbox", 'd', outboxColumns...)}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := relations{table: schema.DefaultTable, columns: schema.DefaultColumns}
			if err := putAll(t, &rs, tt.puts...); err != nil {
				t.Fatalf("put: %v", err)
			}
			got, err := rs.get(tt.get)
			if err == nil {
				t.Fatalf("get(%d) = %+v, nil error; want an error", tt.get, got)
			}
			if got != nil {
				t.Errorf("get(%d) = %+v, %v; want nil with the error", tt.get, got, err)
			}
			if !strings.Contains(err.Error(), fmt.Sprint(tt.get)) {
				t.Errorf("get(%d) error %q does not name the relation", tt.get, err)
			}
		})
	}
}

func TestRelationsMissingColumns(t *testing.T) {
	without := func(cols []relCol, names ...string) []relCol {
		return slices.DeleteFunc(slices.Clone(cols), func(c relCol) bool { return slices.Contains(names, c.name) })
	}
	tests := []struct {
		name    string
		table   schema.Table
		columns schema.Columns
		msg     []byte
		named   []string // column names the error must name
	}{
		{
			name:    "no aggregate_id",
			columns: schema.DefaultColumns,
			msg:     relationMsg(outboxID, "public", "outbox", 'd', without(outboxColumns, "aggregate_id")...),
			named:   []string{"aggregate_id"},
		},
		{
			name:    "no payload or id",
			columns: schema.DefaultColumns,
			msg:     relationMsg(outboxID, "public", "outbox", 'd', without(outboxColumns, "payload", "id")...),
			named:   []string{"payload", "id"},
		},
		{
			name:    "no headers while headers are mapped",
			columns: schema.DefaultColumns,
			msg:     relationMsg(outboxID, "public", "outbox", 'd', without(outboxColumns, "headers")...),
			named:   []string{"headers"},
		},
		{
			name:    "Debezium table with the default mapping",
			columns: schema.DefaultColumns,
			msg:     relationMsg(outboxID, "public", "outbox", 'd', debeziumColumns...),
			named:   []string{"aggregate_type", "aggregate_id", "event_type", "headers"},
		},
		{
			name:    "default table with the Debezium mapping",
			columns: schema.DebeziumColumns,
			msg:     relationMsg(outboxID, "public", "outbox", 'd', outboxColumns...),
			named:   []string{"aggregatetype", "aggregateid", "type"},
		},
		{
			name:    "column names differ in case",
			columns: schema.DefaultColumns,
			msg: relationMsg(outboxID, "public", "outbox", 'd',
				relCol{1, "ID", oidUUID, -1}, relCol{0, "aggregate_type", oidText, -1}, relCol{0, "aggregate_id", oidText, -1},
				relCol{0, "event_type", oidText, -1}, relCol{0, "payload", oidJSONB, -1}, relCol{0, "headers", oidJSONB, -1}),
			named: []string{"id"},
		},
		{
			name:    "table without columns",
			columns: schema.DefaultColumns,
			msg:     relationMsg(outboxID, "public", "outbox", 'd'),
			named:   []string{"id", "aggregate_type", "aggregate_id", "event_type", "payload", "headers"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := decodeRelation(tt.msg)
			if err != nil {
				t.Fatalf("decodeRelation(%x): %v", tt.msg, err)
			}
			rs := relations{table: schema.DefaultTable, columns: tt.columns}
			err = rs.put(r)
			if !errors.Is(err, ErrColumns) {
				t.Fatalf("put(%+v) = %v, want an error wrapping ErrColumns", r, err)
			}
			for _, n := range tt.named {
				if !strings.Contains(err.Error(), n) {
					t.Errorf("put(%+v) = %q, want it to name column %q", r, err, n)
				}
			}
			if !strings.Contains(err.Error(), "public.outbox") {
				t.Errorf("put(%+v) = %q, want it to name the table", r, err)
			}
		})
	}
}

func TestRelationsRebindDecodesNewShape(t *testing.T) {
	// A row decoded with the binding of the latest Relation message, the
	// way the stream does after ALTER TABLE.
	rs := relations{table: schema.DefaultTable, columns: schema.DefaultColumns}
	before := relationMsg(outboxID, "public", "outbox", 'd', outboxColumns...)
	after := relationMsg(outboxID, "public", "outbox", 'd',
		relCol{0, "tenant", oidText, -1}, relCol{0, "payload", oidJSONB, -1}, relCol{1, "id", oidUUID, -1},
		relCol{0, "event_type", oidText, -1}, relCol{0, "aggregate_id", oidText, -1}, relCol{0, "aggregate_type", oidText, -1},
		relCol{0, "created_at", oidTimestamptz, -1}, relCol{0, "headers", oidJSONB, -1})
	want := schema.Event{
		ID: rowID, AggregateType: rowAggType, AggregateID: rowAggID, EventType: rowEventType,
		Payload: []byte(rowPayload), Headers: []byte(rowHeaders),
	}
	steps := []struct {
		name string
		rel  []byte
		row  []byte
	}{
		{"before", before, insertMsg(outboxID, texts(rowID, rowAggType, rowAggID, rowEventType, rowPayload, rowHeaders, rowCreatedAt)...)},
		{"after", after, insertMsg(outboxID, texts("acme", rowPayload, rowID, rowEventType, rowAggID, rowAggType, rowCreatedAt, rowHeaders)...)},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := putAll(t, &rs, st.rel); err != nil {
				t.Fatalf("put: %v", err)
			}
			info, err := rs.get(outboxID)
			if err != nil || info == nil {
				t.Fatalf("get(%d) = %+v, %v; want the outbox", outboxID, info, err)
			}
			var got schema.Event
			if err := decodeInsert(st.row, info.bind, &got); err != nil {
				t.Fatalf("decodeInsert(%s): %v", hx(st.row), err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("decodeInsert(%s) = %+v, want %+v (-want +got):\n%s", hx(st.row), got, want, diff)
			}
		})
	}
}

func TestRelationsBindAnyColumnOrder(t *testing.T) {
	// Any table holding the mapped columns, in any order, among any others,
	// relays rows whose fields come from the right columns.
	mapped := []string{"id", "aggregate_type", "aggregate_id", "event_type", "payload", "headers"}
	rapid.Check(t, func(t *rapid.T) {
		extra := rapid.SliceOfNDistinct(rapid.StringMatching(`[a-z_][a-z0-9_]{0,12}`), 0, 6, rapid.ID[string]).
			Filter(func(s []string) bool {
				return !slices.ContainsFunc(s, func(n string) bool { return slices.Contains(mapped, n) })
			}).Draw(t, "extra")
		names := rapid.Permutation(append(slices.Clone(mapped), extra...)).Draw(t, "names")
		value := rapid.String()

		cols := make([]relCol, len(names))
		tuple := make([]tupleCol, len(names))
		var want schema.Event
		for i, n := range names {
			cols[i] = relCol{0, n, oidText, -1}
			if n != "id" && n != "payload" && rapid.Bool().Draw(t, "null_"+n) {
				tuple[i] = null()
				continue
			}
			v := value.Draw(t, "value_"+n)
			tuple[i] = text(v)
			switch n {
			case "id":
				want.ID = v
			case "aggregate_type":
				want.AggregateType = v
			case "aggregate_id":
				want.AggregateID = v
			case "event_type":
				want.EventType = v
			case "payload":
				want.Payload = []byte(v)
			case "headers":
				want.Headers = []byte(v)
			}
		}

		rs := relations{table: schema.DefaultTable, columns: schema.DefaultColumns}
		rm := relationMsg(outboxID, "public", "outbox", 'd', cols...)
		r, err := decodeRelation(rm)
		if err != nil {
			t.Fatalf("decodeRelation(%x): %v", rm, err)
		}
		if err := rs.put(r); err != nil {
			t.Fatalf("put(%+v): %v", r, err)
		}
		info, err := rs.get(outboxID)
		if err != nil || info == nil {
			t.Fatalf("get(%d) = %+v, %v; want the outbox", outboxID, info, err)
		}
		msg := insertMsg(outboxID, tuple...)
		var got schema.Event
		if err := decodeInsert(msg, info.bind, &got); err != nil {
			t.Fatalf("decodeInsert(%x): %v", msg, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("decodeInsert(%x) with columns %q = %+v, want %+v (-want +got):\n%s", msg, names, got, want, diff)
		}
	})
}

func FuzzDecodeRelation(f *testing.F) {
	for _, tc := range relationCases() {
		f.Add(tc.msg)
	}
	f.Add(relationMsgN(1, "public", "outbox", 'd', 3, outboxColumns[:2]...))
	f.Add(relationMsg(outboxID, "public", "outbox", 'd', debeziumColumns...))

	f.Fuzz(func(t *testing.T, msg []byte) {
		// The stream hands decodeRelation only messages of type 'R'.
		if len(msg) > 0 && msg[0] != msgRelation {
			msg = append([]byte{msgRelation}, msg[1:]...)
		}
		buf := bytes.Clone(msg)
		r, err := decodeRelation(buf)
		if err != nil {
			var de *decodeError
			if !errors.As(err, &de) || de.Type != msgRelation {
				t.Fatalf("decodeRelation(%x) = error %v (%T), want a *decodeError for 'R'", msg, err, err)
			}
			return
		}
		ref, err := pglogreplRelation(msg)
		if err != nil {
			t.Fatalf("decodeRelation(%x) accepted what pglogrepl rejects: %v", msg, err)
		}
		// The cache keeps what it decodes past the buffer's reuse.
		for i := range buf {
			buf[i] = 0xFF
		}
		if diff := cmp.Diff(ref, r); diff != "" {
			t.Fatalf("decodeRelation(%x) disagrees with pglogrepl (-pglogrepl +decodeRelation):\n%s", msg, diff)
		}

		// Whatever the stream learns, the cache answers for that relation:
		// bound to the outbox, read past, or refused with ErrColumns.
		rs := relations{table: schema.Table{Schema: r.Namespace, Name: r.Name}, columns: schema.DefaultColumns}
		if err := rs.put(r); err != nil {
			if !errors.Is(err, ErrColumns) {
				t.Fatalf("put(%+v) = %v, want nil or an error wrapping ErrColumns", r, err)
			}
			return
		}
		info, err := rs.get(r.ID)
		if err != nil || info == nil || !info.relayed {
			t.Fatalf("get(%d) after put(%+v) = %+v, %v; want the outbox", r.ID, r, info, err)
		}
		if len(info.bind.fields) != len(r.Columns) {
			t.Fatalf("get(%d) binds %d columns, relation has %d", r.ID, len(info.bind.fields), len(r.Columns))
		}
	})
}

type relationCase struct {
	name string
	msg  []byte
	want relation
}

func relationCases() []relationCase {
	return []relationCase{
		{
			name: "outbox table",
			msg:  relationMsg(outboxID, "public", "outbox", 'd', outboxColumns...),
			want: relation{ID: outboxID, Namespace: "public", Name: "outbox", Columns: colNames(outboxColumns)},
		},
		{
			name: "Debezium outbox table",
			msg:  relationMsg(24601, "inventory", "outboxevent", 'd', debeziumColumns...),
			want: relation{ID: 24601, Namespace: "inventory", Name: "outboxevent", Columns: colNames(debeziumColumns)},
		},
		{
			name: "replica identity full, every column a key",
			msg: relationMsg(16400, "public", "outbox", 'f',
				relCol{1, "id", oidUUID, -1}, relCol{1, "payload", oidJSONB, -1}),
			want: relation{ID: 16400, Namespace: "public", Name: "outbox", Columns: []string{"id", "payload"}},
		},
		{
			name: "no columns",
			msg:  relationMsg(16401, "public", "empty", 'n'),
			want: relation{ID: 16401, Namespace: "public", Name: "empty", Columns: []string{}},
		},
		{
			name: "empty namespace",
			msg:  relationMsg(1259, "", "pg_class", 'n', relCol{0, "oid", 26, -1}),
			want: relation{ID: 1259, Namespace: "", Name: "pg_class", Columns: []string{"oid"}},
		},
		{
			name: "unicode names",
			msg: relationMsg(16402, "ventes", "événements_日本", 'd',
				relCol{1, "ïd", oidUUID, -1}, relCol{0, "charge utile 🚀", oidJSONB, -1}, relCol{0, "Ω", oidText, -1}),
			want: relation{ID: 16402, Namespace: "ventes", Name: "événements_日本", Columns: []string{"ïd", "charge utile 🚀", "Ω"}},
		},
		{
			name: "greatest id and type values",
			msg: relationMsg(0xFFFFFFFF, "s", "t", 'i',
				relCol{0xFF, "a", 0xFFFFFFFF, -1}, relCol{0, "b", 0, 0x7FFFFFFF}, relCol{0, "c", oidInt8, -0x80000000}),
			want: relation{ID: 0xFFFFFFFF, Namespace: "s", Name: "t", Columns: []string{"a", "b", "c"}},
		},
		{
			name: "column names with zero bytes in their type",
			msg: relationMsg(0x00010000, "public", "outbox", 'd',
				relCol{0, "x", 0x00000100, 0x00010000}, relCol{0, "y", 0, 0}),
			want: relation{ID: 0x00010000, Namespace: "public", Name: "outbox", Columns: []string{"x", "y"}},
		},
	}
}

func TestDecodeRelation(t *testing.T) {
	for _, tt := range relationCases() {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeRelation(tt.msg)
			if err != nil {
				t.Fatalf("decodeRelation(%x): %v", tt.msg, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decodeRelation(%x) = %+v, want %+v (-want +got):\n%s", tt.msg, got, tt.want, diff)
			}
			if ref, err := pglogreplRelation(tt.msg); err != nil {
				t.Errorf("pglogrepl.Parse(%x): %v", tt.msg, err)
			} else if diff := cmp.Diff(ref, got); diff != "" {
				t.Errorf("decodeRelation(%x) = %+v, want %+v as pglogrepl reads it", tt.msg, got, ref)
			}

			// The stream reuses the buffer a Relation message arrives in,
			// and the cache outlives it: nothing may point into it.
			buf := bytes.Clone(tt.msg)
			kept, err := decodeRelation(buf)
			if err != nil {
				t.Fatalf("decodeRelation(%x): %v", buf, err)
			}
			for i := range buf {
				buf[i] = 0xFF
			}
			if diff := cmp.Diff(tt.want, kept); diff != "" {
				t.Errorf("decodeRelation(%x) changed after its buffer was overwritten (-want +got):\n%s", tt.msg, diff)
			}

			checkPrefixes(t, "decodeRelation", tt.msg, func(p []byte) error {
				_, err := decodeRelation(p)
				return err
			})
		})
	}
}

// pglogreplRelation decodes a Relation message with pglogrepl.
func pglogreplRelation(b []byte) (relation, error) {
	m, err := pglogrepl.Parse(b)
	if err != nil {
		return relation{}, err
	}
	rm, ok := m.(*pglogrepl.RelationMessage)
	if !ok {
		return relation{}, fmt.Errorf("pglogrepl parsed a %T", m)
	}
	r := relation{ID: rm.RelationID, Namespace: rm.Namespace, Name: rm.RelationName, Columns: []string{}}
	for _, c := range rm.Columns {
		r.Columns = append(r.Columns, c.Name)
	}
	return r, nil
}

func TestDecodeRelationErrors(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
		why  string
	}{
		{"empty", nil, "relation id"},
		{"type only", []byte{msgRelation}, "relation id"},
		{"namespace without terminator", wire{msgRelation}.u32(1).raw([]byte("public")), "namespace"},
		{"name without terminator", wire{msgRelation}.u32(1).str("public").raw([]byte("outbox")), "relation name"},
		{"no replica identity", wire{msgRelation}.u32(1).str("public").str("outbox"), "column count"},
		{"half a column count", wire{msgRelation}.u32(1).str("public").str("outbox").u8('d').u8(0), "column count"},
		{
			name: "column count says 3, two columns sent",
			msg:  relationMsgN(1, "public", "outbox", 'd', 3, outboxColumns[:2]...),
			why:  "column flags",
		},
		{
			name: "column count 65535 in a short message",
			msg:  wire{msgRelation}.u32(1).str("public").str("outbox").u8('d').u16(0xFFFF),
			why:  "65535 column names and types",
		},
		{
			name: "column name without terminator",
			msg:  wire{msgRelation}.u32(1).str("public").str("outbox").u8('d').u16(1).u8(0).raw([]byte("id")),
			why:  "column name",
		},
		{
			name: "column type cut short",
			msg:  wire{msgRelation}.u32(1).str("public").str("outbox").u8('d').u16(1).u8(0).str("id").u32(oidUUID).u16(0xFFFF),
			why:  "column type",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			call := fmt.Sprintf("decodeRelation(%x)", tt.msg)
			err := noPanic(t, call, func() error {
				_, err := decodeRelation(tt.msg)
				return err
			})
			wantDecodeError(t, call, err, msgRelation, tt.why)
		})
	}
}
