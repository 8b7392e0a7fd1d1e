package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/schema"
)

// dlqRun is the outcome of one `outbox-relay dlq ...`.
type dlqRun struct {
	stdout, stderr string
	code           int
}

// dlq runs `outbox-relay dlq args...` with extraEnv added to e's
// environment.
func (e *env) dlq(t *testing.T, extraEnv []string, args ...string) dlqRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := e.command(ctx, append([]string{"dlq"}, args...)...)
	cmd.Env = append(cmd.Env, extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("outbox-relay dlq %s: %v", strings.Join(args, " "), err)
	}
	r := dlqRun{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
	t.Logf("outbox-relay dlq %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// dlqLine is the part of a `dlq list --json` line the tests read.
type dlqLine struct {
	Topic          string            `json:"topic"`
	Partition      int32             `json:"partition"`
	Offset         int64             `json:"offset"`
	Kind           string            `json:"kind"`
	OriginalTopic  string            `json:"original_topic"`
	Key            string            `json:"key"`
	ID             string            `json:"id"`
	EventType      string            `json:"event_type"`
	Reason         string            `json:"reason"`
	Error          string            `json:"error"`
	Attempts       int               `json:"attempts"`
	PayloadOmitted bool              `json:"payload_omitted"`
	Headers        map[string]string `json:"headers"`
	Replayable     bool              `json:"replayable"`
	Refusal        string            `json:"refusal"`
}

func (l dlqLine) from() string { return fmt.Sprintf("%s/%d/%d", l.Topic, l.Partition, l.Offset) }

// synthetic is a dead letter the test writes itself, and the record its
// replay must produce.
type synthetic struct {
	rec          *kgo.Record // the dead letter
	origTopic    string
	origHeaders  []string // key, value pairs, without dlq_replayed_from
	kind, reason string
}

func relaySynthetic(id, aggregateType string, withTopic bool) synthetic {
	hs := []string{"id", id, "event_type", "created", "aggregate_type", aggregateType, "position", "0000000001a2b3c400000002"}
	dl := append(slices.Clone(hs), "dlq_reason", "rejected", "dlq_error", "POLICY_VIOLATION: the broker's policy refused it", "dlq_attempts", "1",
		"dlq_source_lsn", "0/1A2B3C4", "dlq_time", time.Now().UTC().Format(time.RFC3339Nano), "dlq_table", "public.outbox",
		"dlq_headers", `{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "n": 3}`)
	if withTopic {
		dl = append(dl, "dlq_topic", "outbox."+aggregateType)
	}
	return synthetic{
		rec:         &kgo.Record{Topic: dlqTopic, Key: []byte("agg-" + id), Value: []byte(`{"synthetic": "` + id + `"}`), Headers: recordHeaders(dl...)},
		origTopic:   "outbox." + aggregateType,
		origHeaders: append(hs, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "n", "3"),
		kind:        "relay", reason: "rejected",
	}
}

func inboxSynthetic(id, topic string, value []byte) synthetic {
	hs := []string{"id", id, "event_type", "paid", "traceparent", "00-aa-bb-01"}
	now := time.Now().UTC()
	dl := append(slices.Clone(hs), "inbox_dlq_topic", topic, "inbox_dlq_partition", "2", "inbox_dlq_offset", "17",
		"inbox_dlq_consumer", "billing", "inbox_dlq_group", "billing-group", "inbox_dlq_error", "handler: insert invoice: duplicate key",
		"inbox_dlq_attempts", "5", "inbox_dlq_first_attempt", now.Add(-time.Minute).Format(time.RFC3339Nano),
		"inbox_dlq_last_attempt", now.Format(time.RFC3339Nano), "inbox_dlq_record_time", now.Add(-2*time.Minute).Format(time.RFC3339Nano))
	return synthetic{
		rec:         &kgo.Record{Topic: dlqTopic, Key: []byte("key-" + id), Value: value, Headers: recordHeaders(dl...)},
		origTopic:   topic,
		origHeaders: hs,
		kind:        "inbox",
	}
}

func recordHeaders(kv ...string) []kgo.RecordHeader {
	var hs []kgo.RecordHeader
	for i := 0; i < len(kv); i += 2 {
		hs = append(hs, kgo.RecordHeader{Key: kv[i], Value: []byte(kv[i+1])})
	}
	return hs
}

// readTopics reads topics from the start until two quiet seconds pass.
func readTopics(t *testing.T, e *env, topics ...string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.broker.ListenAddrs()...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.MetadataMinAge(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for quiet := 0; quiet < 2; {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		if fs.NumRecords() == 0 {
			quiet++
		}
		recs = append(recs, fs.Records()...)
	}
	return recs
}

// TestDLQ lists and replays dead letters of both kinds: two the relay
// writes for poison rows, and synthetic ones of the relay and of an inbox
// consumer written with franz-go.
func TestDLQ(t *testing.T) {
	e := newEnv(t)
	const maxBytes = "OUTBOX_RELAY_KAFKA_MAX_MESSAGE_BYTES=4096"

	// Real dead letters: a payload too large (omitted) and an illegal
	// topic name (no dlq_topic).
	p := e.start(maxBytes)
	p.waitStreaming(time.Minute)
	big, illegal := poisonRow(poisonSize, "order", "big-1"), poisonRow(poisonTopic, "order", "bad-1")
	e.query(t, 30*time.Second, func(ctx context.Context, conn *pgx.Conn) error {
		return schema.Insert(ctx, conn, *big, *illegal)
	})
	consumeDLQ(t, e, func(got map[string][]*kgo.Record) bool { return len(got[big.ID]) > 0 && len(got[illegal.ID]) > 0 })
	if code := p.term(30 * time.Second); code != 0 {
		t.Fatalf("relay exited %d\n%s", code, p.logText())
	}

	// Synthetic dead letters.
	syn := map[string]synthetic{
		"r1": relaySynthetic("r1", "order", true),
		"r2": relaySynthetic("r2", "invoice", false), // an older relay's: no dlq_topic
		"r3": relaySynthetic("r3", "payment", true),
		"i1": inboxSynthetic("i1", "orders", []byte(`{"order": 1}`)),
		"i2": inboxSynthetic("i2", "orders", bytes.Repeat([]byte("x"), 8192)), // too large under maxBytes
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.broker.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, id := range slices.Sorted(maps.Keys(syn)) {
		if err := cl.ProduceSync(t.Context(), syn[id].rec).FirstErr(); err != nil {
			t.Fatalf("produce synthetic dead letter %s: %v", id, err)
		}
	}

	// list, as a table.
	list := e.dlq(t, nil, "list")
	if list.code != 0 {
		t.Fatalf("dlq list exited %d", list.code)
	}
	for _, want := range []string{"OFFSET", "r1", "r2", "r3", "i1", "i2", big.ID, illegal.ID, "outbox.invoice", "orders",
		"7 dead letters in outbox-relay-dlq (5 relay, 2 inbox, 0 unknown)"} {
		if !strings.Contains(list.stdout, want) {
			t.Errorf("dlq list printed no %q", want)
		}
	}

	// list --json.
	js := e.dlq(t, nil, "list", "--json")
	if js.code != 0 {
		t.Fatalf("dlq list --json exited %d", js.code)
	}
	lines := map[string]dlqLine{}
	sc := bufio.NewScanner(strings.NewReader(js.stdout))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l dlqLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("dlq list --json line %q: %v", sc.Text(), err)
		}
		lines[l.ID] = l
	}
	if len(lines) != 7 || !strings.Contains(js.stderr, "7 dead letters") {
		t.Errorf("dlq list --json printed %d dead letters, stderr %q; want 7 and the count on stderr", len(lines), js.stderr)
	}
	for id, s := range syn {
		l := lines[id]
		if l.Kind != s.kind || l.OriginalTopic != s.origTopic || l.Key != string(s.rec.Key) || !l.Replayable || l.Topic != dlqTopic {
			t.Errorf("dlq list --json of %s: %+v; want kind %s, original topic %s, key %s, replayable", id, l, s.kind, s.origTopic, s.rec.Key)
		}
	}
	if l := lines["i1"]; l.Attempts != 5 || !strings.Contains(l.Error, "duplicate key") || l.Headers["traceparent"] != "00-aa-bb-01" || l.Headers["inbox_dlq_topic"] != "" {
		t.Errorf("dlq list --json of the inbox dead letter i1: %+v", l)
	}
	if l := lines[big.ID]; l.Kind != "relay" || l.OriginalTopic != "outbox.order" || !l.PayloadOmitted || l.Replayable || l.Reason != "size" {
		t.Errorf("dlq list --json of the relay's dead letter of a row too large: %+v; want original topic outbox.order from dlq_topic, payload omitted, not replayable", l)
	}
	if l := lines[illegal.ID]; l.Kind != "relay" || l.OriginalTopic != "" || l.Replayable || l.Reason != "topic" {
		t.Errorf("dlq list --json of the relay's dead letter of an illegal topic: %+v; want no original topic, not replayable", l)
	}

	// replay by id, both kinds.
	if r := e.dlq(t, nil, "replay", "--id", "r1", "--id", "i1"); r.code != 0 || strings.Count(r.stdout, "sent\t") != 2 {
		t.Errorf("dlq replay --id r1 --id i1: exit %d, want 0 and two sent lines", r.code)
	}
	// replay by offset.
	r2 := lines["r2"]
	if r := e.dlq(t, nil, "replay", "--offset", fmt.Sprintf("%d/%d", r2.Partition, r2.Offset)); r.code != 0 || !strings.Contains(r.stdout, "to outbox.invoice/") {
		t.Errorf("dlq replay --offset of r2: exit %d, want 0 and a line sending it to outbox.invoice", r.code)
	}
	// A record too large fails alone, saying what to do; the other goes.
	if r := e.dlq(t, []string{maxBytes}, "replay", "--id", "i2,r3"); r.code != 1 ||
		!strings.Contains(r.stdout, "failed\toutbox-relay-dlq/") || !strings.Contains(r.stdout, "raise both") || !strings.Contains(r.stdout, "id r3\tto outbox.payment/") {
		t.Errorf("dlq replay of a record too large and another: exit %d, want 1, a failed line with the fix and r3 sent", r.code)
	}
	// The relay's dead letter without its payload is refused, pointing to replay.
	if r := e.dlq(t, nil, "replay", "--id", big.ID); r.code != 1 || !strings.Contains(r.stdout, "outbox-relay replay --since "+big.ID) {
		t.Errorf("dlq replay of a dead letter without its payload: exit %d, want 1 and the replay command to run", r.code)
	}
	// --dry-run sends nothing.
	if r := e.dlq(t, nil, "replay", "--id", "r1", "--dry-run"); r.code != 0 || !strings.Contains(r.stdout, "would send") {
		t.Errorf("dlq replay --dry-run: exit %d, want 0 and a would-send line", r.code)
	}

	// Bad input.
	for _, bad := range []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"no selection", nil, []string{"replay"}, 2, "--id"},
		{"unknown id", nil, []string{"replay", "--id", "nope"}, 2, "no dead letter"},
		{"unknown offset", nil, []string{"replay", "--offset", "0/999"}, 2, "holds no dead letter"},
		{"no such topic", nil, []string{"list", "--dlq-topic", "no-such-dlq"}, 2, "no such topic"},
		{"unreachable broker", []string{"OUTBOX_RELAY_KAFKA_BROKERS=127.0.0.1:1"}, []string{"list"}, 1, "no kafka broker answered"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			r := e.dlq(t, bad.env, bad.args...)
			if r.code != bad.code || !strings.Contains(r.stderr, bad.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", r.code, r.stderr, bad.code, bad.want)
			}
		})
	}

	// The original topics hold exactly what was replayed, once, with the
	// original key, value and headers and dlq_replayed_from.
	got := map[string][]*kgo.Record{}
	for _, rec := range readTopics(t, e, "outbox.order", "outbox.invoice", "outbox.payment", "orders") {
		got[header(rec, "id")] = append(got[header(rec, "id")], rec)
	}
	for _, id := range []string{"r1", "r2", "r3", "i1"} {
		s := syn[id]
		recs := got[id]
		if len(recs) != 1 {
			t.Errorf("%s reached its original topic %d times, want once", id, len(recs))
			continue
		}
		rec := recs[0]
		var hs []string
		for _, h := range rec.Headers {
			hs = append(hs, h.Key, string(h.Value))
		}
		wantHeaders := append(slices.Clone(s.origHeaders), "dlq_replayed_from", lines[id].from())
		if rec.Topic != s.origTopic || !bytes.Equal(rec.Key, s.rec.Key) || !bytes.Equal(rec.Value, s.rec.Value) {
			t.Errorf("%s replayed to %s key %q value %q; want %s, %q, %q", id, rec.Topic, rec.Key, rec.Value, s.origTopic, s.rec.Key, s.rec.Value)
		}
		if diff := cmp.Diff(wantHeaders, hs); diff != "" {
			t.Errorf("%s replayed with headers (-want +got):\n%s", id, diff)
		}
		delete(got, id)
	}
	for id, recs := range got {
		t.Errorf("the original topics got %d records of %s, which no replay chose (first at %s/%d/%d)", len(recs), id, recs[0].Topic, recs[0].Partition, recs[0].Offset)
	}
}
