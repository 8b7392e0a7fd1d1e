package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/schema"
)

// replayRows is how many rows TestReplayBoundedMemory replays: a million in
// make test (about 30 s), fewer with `go test ./e2e -run
// TestReplayBoundedMemory -args -replay-rows=200000`.
var replayRows = flag.Int("replay-rows", 1_000_000, "rows TestReplayBoundedMemory seeds and replays")

// serverNow returns the server's clock, which created_at uses.
func (e *env) serverNow(t *testing.T) time.Time {
	t.Helper()
	var now time.Time
	e.query(t, 10*time.Second, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&now)
	})
	return now
}

// insertTxns writes n transactions of perTxn rows of aggregate type typ,
// spread over aggregates, each row's event type naming its batch.
func (e *env) insertTxns(t *testing.T, typ, batch string, n, perTxn int) {
	t.Helper()
	e.query(t, time.Minute, func(ctx context.Context, conn *pgx.Conn) error {
		for i := range n {
			msgs := make([]schema.Message, perTxn)
			for j := range msgs {
				msgs[j] = schema.Message{AggregateType: typ, AggregateID: fmt.Sprintf("%s-%d", typ, (i+j)%4), EventType: batch, Payload: []byte(fmt.Sprintf(`{"txn": %d, "row": %d}`, i, j))}
			}
			if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return schema.Insert(ctx, tx, msgs...) }); err != nil {
				return err
			}
		}
		return nil
	})
}

// wantOrder returns the IDs the query selects, grouped by aggregate ID,
// each group in replay order (created_at, id).
func (e *env) wantOrder(t *testing.T, where string, args ...any) (map[string][]string, int) {
	t.Helper()
	want := map[string][]string{}
	n := 0
	e.query(t, 10*time.Second, func(ctx context.Context, conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, "SELECT aggregate_id, id::text FROM outbox WHERE "+where+" ORDER BY created_at, id", args...)
		if err != nil {
			return err
		}
		var agg, id string
		_, err = pgx.ForEachRow(rows, []any{&agg, &id}, func() error {
			want[agg] = append(want[agg], id)
			n++
			return nil
		})
		return err
	})
	return want, n
}

// readReplayed consumes until n records arrived or timeout, and returns the
// IDs per key in partition order, checking each record's replay headers.
func readReplayed(t *testing.T, c *consumer, n int, timeout time.Duration) map[string][]string {
	t.Helper()
	got := map[string][]string{}
	count := 0
	deadline := time.Now().Add(timeout)
	for count < n && time.Now().Before(deadline) {
		recs, err := c.poll(t.Context(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			h := headerMap(r)
			if h["replayed"] != "true" || h["replay_started"] == "" || h["position"] != strings.Repeat("0", 24) {
				t.Errorf("record %s headers %v: want replayed=true, replay_started set, position of 24 zeros", h["id"], h)
			}
			got[string(r.Key)] = append(got[string(r.Key)], h["id"])
			count++
		}
	}
	// Anything beyond n would arrive now.
	recs, _ := c.poll(t.Context(), 500*time.Millisecond)
	for _, r := range recs {
		got[string(r.Key)] = append(got[string(r.Key)], headerMap(r)["id"])
	}
	return got
}

func headerMap(r *kgo.Record) map[string]string {
	h := make(map[string]string, len(r.Headers))
	for _, x := range r.Headers {
		h[x.Key] = string(x.Value)
	}
	return h
}

// TestReplayTimeRange replays the middle of three batches, by time and by
// event IDs: exactly its rows arrive, each aggregate's in replay order,
// marked as replayed. No relay runs: replay needs no slot.
func TestReplayTimeRange(t *testing.T) {
	e := newEnv(t)
	e.insertTxns(t, "order", "before", 5, 3)
	time.Sleep(10 * time.Millisecond)
	since := e.serverNow(t)
	e.insertTxns(t, "order", "inside", 20, 5)
	e.insertTxns(t, "invoice", "inside", 3, 2)
	until := e.serverNow(t)
	time.Sleep(10 * time.Millisecond)
	e.insertTxns(t, "order", "after", 5, 3)

	want, n := e.wantOrder(t, "created_at >= $1 AND created_at < $2", since, until)
	if n != 106 {
		t.Fatalf("%d rows between %s and %s, want 106", n, since, until)
	}
	out, err := e.command(t.Context(), "replay", "--since", since.Format(time.RFC3339Nano), "--until", until.Format(time.RFC3339Nano),
		"--rate", "2000/s").CombinedOutput()
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	for _, w := range []string{`"msg":"republished"`, "replayed 106 rows"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("replay output lacks %q:\n%s", w, out)
		}
	}
	c := e.consumer()
	got := readReplayed(t, c, n, 30*time.Second)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("replayed records per key (-want +got):\n%s\nreplay output:\n%s", diff, out)
	}

	// By event IDs and aggregate type: the first to the last invoice row.
	inv, ni := e.wantOrder(t, "aggregate_type = 'invoice'")
	var first, last string
	e.query(t, 10*time.Second, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT min(id::text) FILTER (WHERE rn = 1), min(id::text) FILTER (WHERE rn = cnt) FROM (
			SELECT id, row_number() OVER (ORDER BY created_at, id) rn, count(*) OVER () cnt FROM outbox WHERE aggregate_type = 'invoice') s`).Scan(&first, &last)
	})
	out, err = e.command(t.Context(), "replay", "--since", first, "--until", last, "--aggregate-type", "invoice").CombinedOutput()
	if err != nil {
		t.Fatalf("replay by event IDs: %v\n%s", err, out)
	}
	got = readReplayed(t, c, ni, 30*time.Second)
	if diff := cmp.Diff(inv, got); diff != "" {
		t.Errorf("replayed invoice records per key (-want +got):\n%s\nreplay output:\n%s", diff, out)
	}

	// A dry run prints the rows and sends nothing.
	cmd := e.command(t.Context(), "replay", "--since", since.Format(time.RFC3339Nano), "--until", until.Format(time.RFC3339Nano), "--dry-run")
	cmd.Env = append(cmd.Env, "OUTBOX_RELAY_KAFKA_BROKERS=127.0.0.1:1")
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Run(); err != nil {
		t.Fatalf("replay --dry-run: %v", err)
	}
	if lines := strings.Count(stdout.String(), "\n"); lines != n+1 {
		t.Errorf("replay --dry-run printed %d lines, want a header and %d rows:\n%s", lines, n, stdout.String())
	}
	if recs, _ := c.poll(t.Context(), time.Second); len(recs) != 0 {
		t.Errorf("replay --dry-run sent %d records, want none", len(recs))
	}
}

// TestReplayBadInput: an unparseable --since, an unknown event ID and an
// unreachable broker each stop replay non-zero with a message saying so.
func TestReplayBadInput(t *testing.T) {
	e := newEnv(t)
	e.insertTxns(t, "order", "x", 1, 1)
	tests := []struct {
		name string
		args []string
		env  string
		want string
	}{
		{"no since", []string{"replay"}, "", "--since is required"},
		{"unparseable since", []string{"replay", "--since", "yesterday"}, "", `--since "yesterday" is neither an RFC 3339 time`},
		{"unknown event id", []string{"replay", "--since", "2000-01-01T00:00:00Z", "--until", "00000000-0000-4000-8000-000000000000"}, "", `--until "00000000-0000-4000-8000-000000000000" is neither`},
		{"bad rate", []string{"replay", "--since", "2000-01-01T00:00:00Z", "--rate", "fast"}, "", `--rate "fast"`},
		{"unreachable broker", []string{"replay", "--since", "2000-01-01T00:00:00Z"}, "OUTBOX_RELAY_KAFKA_BROKERS=127.0.0.1:1", "no kafka broker answered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := e.command(t.Context(), tt.args...)
			if tt.env != "" {
				cmd.Env = append(cmd.Env, tt.env)
			}
			out, err := cmd.CombinedOutput()
			if err == nil || cmd.ProcessState.ExitCode() == 0 {
				t.Fatalf("%v exited 0, want non-zero\n%s", tt.args, out)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Errorf("%v printed:\n%s\nwant %q", tt.args, out, tt.want)
			}
		})
	}
}

// TestReplayBoundedMemory replays -replay-rows rows of ~200-byte payloads
// and checks that the binary stays under 64 MB (VmHWM, sampled from /proc
// until it exits), that every row arrives and that progress is printed.
func TestReplayBoundedMemory(t *testing.T) {
	t.Parallel()
	const (
		budget = 64_000_000
		topic  = "outbox.bulk"
		perTxn = 50_000
	)
	rows := *replayRows
	e := newEnv(t)
	e.bin = plainRelayBin(t)
	loadStart := time.Now()
	e.query(t, 5*time.Minute, func(ctx context.Context, conn *pgx.Conn) error {
		for from := 0; from < rows; from += perTxn {
			_, err := conn.Exec(ctx, `INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload)
				SELECT md5('bulk-' || g)::uuid, 'bulk', 'bulk-' || lpad((g % 1000)::text, 4, '0'), 'loaded',
				       jsonb_build_object('seq', g, 'pad', repeat('x', 170))
				FROM generate_series($1::int, $2::int) AS g`, from, min(from+perTxn, rows)-1)
			if err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("seeded %d rows in %s", rows, ms(time.Since(loadStart)))

	cmd := e.command(context.Background(), "replay", "--since", "2000-01-01T00:00:00Z", "--log-format", "text")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	began := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	pid := cmd.Process.Pid
	var hwm int64
	var err error
wait:
	for {
		select {
		case err = <-done:
			break wait
		case <-time.After(50 * time.Millisecond):
			if v, ok := readProcStatus(pid, "VmHWM"); ok {
				hwm = max(hwm, v)
			}
		}
	}
	took := time.Since(began)
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, out.String())
	}
	if got := endOffsets(t, e, topic); got != int64(rows) {
		t.Errorf("%s holds %d records, want %d", topic, got, rows)
	}
	if n := strings.Count(out.String(), "msg=republishing"); n < 1 {
		t.Errorf("replay printed no progress:\n%s", out.String())
	}
	t.Logf("replayed %d rows in %s (%.0f rows/s); VmHWM %.1f MiB (budget %.1f MiB)", rows, ms(took), float64(rows)/took.Seconds(), mib(hwm), mib(budget))
	if hwm == 0 || hwm > budget {
		t.Errorf("replay VmHWM = %.1f MiB, want above 0 and under %.1f MiB\n%s", mib(hwm), mib(budget), out.String())
	}
}

// readProcStatus is procStatus for a process that may have exited.
func readProcStatus(pid int, field string) (int64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err == nil {
				return kb << 10, true
			}
		}
	}
	return 0, false
}
