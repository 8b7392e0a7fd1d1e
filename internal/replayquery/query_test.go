package replayquery_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/outbox-relay/outbox-relay/internal/replayquery"
	"github.com/outbox-relay/outbox-relay/schema"
)

// TestQuerySelect seeds rows at known times, two of them in one
// transaction, and checks which rows each range selects, in which order.
func TestQuerySelect(t *testing.T) {
	conn := newOutbox(t)
	ctx := t.Context()
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ids := make([]string, 6)
	for i := range ids {
		ids[i] = fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
	}
	// Rows 2 and 3 share a transaction, so a created_at; the others are a
	// minute apart. Row 5 is of another aggregate type.
	at := []time.Time{base, base.Add(time.Minute), base.Add(2 * time.Minute), base.Add(2 * time.Minute), base.Add(3 * time.Minute), base.Add(4 * time.Minute)}
	for i, id := range ids {
		typ := "order"
		if i == 5 {
			typ = "invoice"
		}
		_, err := conn.Exec(ctx, `INSERT INTO public.outbox (id, aggregate_type, aggregate_id, event_type, payload, headers, created_at)
			VALUES ($1, $2, 'a1', 'e', '{"n": 1}', $3, $4)`, id, typ, map[bool]any{true: `{"h":"v"}`, false: nil}[i == 0], at[i])
		if err != nil {
			t.Fatal(err)
		}
	}
	q := replayquery.Query{Table: schema.DefaultTable, Columns: schema.DefaultColumns}
	bound := func(i int) replayquery.Bound {
		b, err := q.LookupBound(ctx, conn, ids[i])
		if err != nil {
			t.Fatalf("LookupBound(%s): %v", ids[i], err)
		}
		return b
	}
	tests := []struct {
		name  string
		since replayquery.Bound
		until replayquery.Bound
		typ   string
		want  []int
	}{
		{"all", replayquery.Bound{}, replayquery.Bound{}, "", []int{0, 1, 2, 3, 4, 5}},
		{"time range, until exclusive", replayquery.Bound{CreatedAt: at[1]}, replayquery.Bound{CreatedAt: at[4]}, "", []int{1, 2, 3}},
		{"from an event, inclusive", bound(3), replayquery.Bound{}, "", []int{3, 4, 5}},
		{"to an event, inclusive", replayquery.Bound{}, bound(2), "", []int{0, 1, 2}},
		{"aggregate type", replayquery.Bound{CreatedAt: at[4]}, replayquery.Bound{}, "order", []int{4}},
		{"empty", replayquery.Bound{CreatedAt: at[5].Add(time.Second)}, replayquery.Bound{}, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := q
			r.Since, r.Until, r.AggregateType = tt.since, tt.until, tt.typ
			sql, args := r.SelectSQL()
			rows, err := conn.Query(ctx, sql, args...)
			if err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
			var got []int
			var ev schema.Event
			for rows.Next() {
				created, err := r.Scan(rows, &ev)
				if err != nil {
					t.Fatal(err)
				}
				var i int
				fmt.Sscanf(ev.ID[24:], "%d", &i)
				got = append(got, i)
				if !created.Equal(at[i]) || ev.AggregateID != "a1" || string(ev.Payload) != `{"n": 1}` || ev.Table != "public.outbox" {
					t.Errorf("row %d = %+v created %s, want created %s, aggregate a1, payload {\"n\": 1}", i, ev, created, at[i])
				}
				if wantH := map[bool]string{true: `{"h": "v"}`}[i == 0]; string(ev.Headers) != wantH {
					t.Errorf("row %d headers = %q, want %q", i, ev.Headers, wantH)
				}
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if !cmp.Equal(got, tt.want) {
				t.Errorf("rows = %v, want %v", got, tt.want)
			}
			var n int
			sql, args = r.CountSQL()
			if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil || n != len(tt.want) {
				t.Errorf("count = %d, %v, want %d", n, err, len(tt.want))
			}
		})
	}
	for _, id := range []string{"00000000-0000-4000-8000-999999999999", "not-a-uuid"} {
		if _, err := q.LookupBound(ctx, conn, id); !errors.Is(err, replayquery.ErrNoEvent) {
			t.Errorf("LookupBound(%q) = %v, want ErrNoEvent", id, err)
		}
	}
	// The Skip predicate drops rows.
	r := q
	r.Skip = func(p string) string { return `"aggregate_type" = ` + p }
	r.SkipArg = "order"
	sql, args := r.CountSQL()
	var n int
	if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil || n != 1 {
		t.Errorf("count with Skip = %d, %v, want 1", n, err)
	}
}
