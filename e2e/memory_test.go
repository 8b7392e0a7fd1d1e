package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"debug/buildinfo"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestFaultStalledBrokerBoundedMemory starts the relay on a backlog of a
// million rows while the broker holds every produce request unanswered:
// the relay must stop reading at its in-flight bound, keeping its memory
// under 2 × the bound + 64 MB, and drain the backlog once the broker
// answers again.
func TestFaultStalledBrokerBoundedMemory(t *testing.T) {
	t.Parallel()
	const (
		rows       = 1_000_000
		aggregates = 1000
		perTxn     = 10_000
		inflight   = 16 << 20
		budget     = 2*inflight + 64_000_000
		stall      = 15 * time.Second
		topic      = "outbox.bulk"
	)
	e := newEnv(t)
	e.bin = plainRelayBin(t)

	// The backlog, written while no relay runs.
	loadStart := time.Now()
	e.query(t, 5*time.Minute, func(ctx context.Context, conn *pgx.Conn) error {
		for from := 0; from < rows; from += perTxn {
			_, err := conn.Exec(ctx, `INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload)
				SELECT md5('bulk-' || g)::uuid, 'bulk', 'bulk-' || lpad((g % $3)::text, 4, '0'), 'loaded',
				       jsonb_build_object('seq', g, 'pad', repeat('x', 170))
				FROM generate_series($1::int, $2::int) AS g`, from, from+perTxn-1, aggregates)
			if err != nil {
				return fmt.Errorf("insert rows %d to %d: %w", from, from+perTxn-1, err)
			}
		}
		return nil
	})
	t.Logf("backlog: %d rows of ~200-byte payloads on %d aggregates in %d transactions, written in %s",
		rows, aggregates, rows/perTxn, ms(time.Since(loadStart)))

	// Every produce request sleeps until release closes.
	release := make(chan struct{})
	var stalled atomic.Bool
	var held atomic.Int64
	stalled.Store(true)
	e.broker.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.broker.KeepControl()
		if !stalled.Load() {
			e.broker.DropControl()
			return nil, nil, false
		}
		held.Add(1)
		e.broker.SleepControl(func() { <-release })
		return nil, nil, false
	})
	t.Cleanup(func() {
		if stalled.CompareAndSwap(true, false) {
			close(release)
		}
	})

	r := &faultRun{t: t, e: e} // no collector: checkBacklog reads the topic
	p := r.relay("OUTBOX_RELAY_MAX_INFLIGHT_BYTES="+strconv.Itoa(inflight),
		// So that the byte bound, not the event bound, is the one that holds.
		"OUTBOX_RELAY_MAX_INFLIGHT_EVENTS=10000000")
	p.waitStreaming(time.Minute)
	pid := p.cmd.Process.Pid
	var peak int64
	for end := time.Now().Add(stall); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if !p.running() {
			r.tails()
			t.Fatalf("relay exited while the broker stalled: %v", p.err)
		}
		peak = max(peak, procStatus(t, pid, "VmRSS"))
	}
	hwm := procStatus(t, pid, "VmHWM")
	metrics := metricLines(t, p, "outbox_relay_inflight_events", "outbox_relay_inflight_bytes", "outbox_relay_rows_received_total")
	produced := endOffsets(t, e, topic)
	t.Logf("stalled %s: %d produce requests held; relay pid %d: VmRSS peak %.1f MiB sampled every 100ms, VmHWM %.1f MiB; budget %.1f MiB (2 × %d MiB + 64 MB); in flight: %s; records in %s: %d",
		stall, held.Load(), pid, mib(peak), mib(hwm), mib(budget), inflight>>20, metrics, topic, produced)
	if held.Load() == 0 {
		t.Fatal("no produce request reached the broker while it stalled: the test proves nothing")
	}
	if produced != 0 {
		t.Errorf("%d records reached %s while every produce request was held: the stall leaked", produced, topic)
	}
	if max(peak, hwm) >= budget {
		t.Errorf("relay memory peaked at %.1f MiB while the broker stalled, over the %.1f MiB budget", mib(max(peak, hwm)), mib(budget))
	}

	released := time.Now()
	stalled.Store(false)
	close(release)
	for n := int64(0); n < rows; n = endOffsets(t, e, topic) {
		if time.Since(released) > 4*time.Minute {
			t.Fatalf("%s holds %d of %d records 4 minutes after the broker was released", topic, n, rows)
		}
		if !p.running() {
			r.tails()
			t.Fatalf("relay exited while draining: %v", p.err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	drained := time.Since(released)
	drainHWM := procStatus(t, pid, "VmHWM")
	// Draining at full speed holds the serialized produce requests and the
	// garbage of what went before on top of the events in flight: the
	// budget is the stalled relay's, and the drain's peak is reported.
	over := ""
	if drainHWM >= budget {
		over = fmt.Sprintf(", %.1f MiB over the stalled budget", mib(drainHWM-budget))
	}
	t.Logf("drain: %d records in %s %s after the broker was released (%.0f rows/s); relay VmHWM over its whole life %.1f MiB%s",
		rows, topic, ms(drained), rows/drained.Seconds(), mib(drainHWM), over)
	checkBacklog(t, e, topic, rows)
	if !t.Failed() {
		r.stop(p)
	}
}

// checkBacklog checks the records of topic, which must hold one per row
// of the backlog: every record's id is that of its row, and each
// aggregate's rows arrive in the order they were written. It consumes the
// whole topic, or under the race detector, which makes consuming a
// million records take most of a minute, windows spread over each
// partition.
func checkBacklog(t *testing.T, e *env, topic string, rows int) {
	t.Helper()
	start := time.Now()
	ends := partitionEnds(t, e, topic)
	var total int64
	for _, end := range ends {
		total += end
	}
	if total != int64(rows) {
		t.Errorf("%s holds %d records, want %d: one per row", topic, total, rows)
	}
	v := &backlogCheck{t: t, rows: rows, seen: make([]bool, rows)}
	if !raceEnabled {
		v.consume(e, topic, nil, rows)
		t.Logf("consumed %d records of %s in %s: %d distinct rows of %d, %d duplicates, %d wrong, %d out of order",
			v.records, topic, ms(time.Since(start)), v.distinct, rows, v.records-v.distinct, v.bad, v.disorder)
		if v.distinct < rows {
			missing := make([]string, 0, 5)
			for seq, ok := range v.seen {
				if !ok && len(missing) < 5 {
					missing = append(missing, strconv.Itoa(seq))
				}
			}
			t.Errorf("%d of %d backlog rows never arrived, e.g. rows %s", rows-v.distinct, rows, strings.Join(missing, ", "))
		}
		return
	}
	const window = 5000
	for _, frac := range []float64{0, 0.3, 0.6, 0.9} {
		from := make(map[int32]kgo.Offset, len(ends))
		want := 0
		for p, end := range ends {
			at := int64(frac * float64(end))
			from[p] = kgo.NewOffset().At(at)
			want += int(min(window, end-at))
		}
		v.consume(e, topic, from, want)
	}
	t.Logf("race detector on: sampled %d records of %s in windows of %d at 0%%, 30%%, 60%% and 90%% of each partition, in %s: %d wrong, %d out of order; the partitions' end offsets sum to %d",
		v.records, topic, window, ms(time.Since(start)), v.bad, v.disorder, total)
}

// backlogCheck accumulates what checkBacklog finds.
type backlogCheck struct {
	t                                *testing.T
	rows                             int
	seen                             []bool
	records, distinct, bad, disorder int
}

// consume reads n records of topic, from the start or from the offsets
// from, and checks them; the order of an aggregate's rows is checked
// within what one call reads.
func (v *backlogCheck) consume(e *env, topic string, from map[int32]kgo.Offset, n int) {
	t := v.t
	t.Helper()
	opts := []kgo.Opt{kgo.SeedBrokers(e.broker.ListenAddrs()...), kgo.FetchMaxBytes(64 << 20)}
	if from == nil {
		opts = append(opts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	} else {
		opts = append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	last := make(map[string]int)
	read := 0
	for deadline := time.Now().Add(3 * time.Minute); read < n && time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(rec *kgo.Record) {
			read++
			v.records++
			seq, ok := backlogSeq(rec.Value)
			if !ok || seq < 0 || seq >= v.rows {
				if v.bad++; v.bad <= 5 {
					t.Errorf("%s/%d@%d: value %.60q is no backlog row", rec.Topic, rec.Partition, rec.Offset, rec.Value)
				}
				return
			}
			if id := header(rec, "id"); id != bulkID(seq) {
				if v.bad++; v.bad <= 5 {
					t.Errorf("%s/%d@%d: row %d has id %q, want %q", rec.Topic, rec.Partition, rec.Offset, seq, id, bulkID(seq))
				}
			}
			if !v.seen[seq] {
				v.seen[seq] = true
				v.distinct++
			}
			key := string(rec.Key)
			if prev, ok := last[key]; ok && seq < prev {
				if v.disorder++; v.disorder <= 5 {
					t.Errorf("aggregate %s: row %d arrived after row %d", key, seq, prev)
				}
			}
			last[key] = max(last[key], seq)
		})
	}
	if read < n {
		t.Errorf("read %d of %d records of %s within 3 minutes", read, n, topic)
	}
}

// backlogSeq returns the seq of a backlog row's value, which jsonb prints
// as {"pad": "xx…", "seq": 123}.
func backlogSeq(value []byte) (int, bool) {
	i := bytes.LastIndex(value, []byte(`"seq": `))
	if i < 0 {
		return 0, false
	}
	digits := bytes.TrimSuffix(value[i+len(`"seq": `):], []byte("}"))
	seq, err := strconv.Atoi(string(digits))
	return seq, err == nil
}

// bulkID is the id the backlog gives row seq: md5('bulk-' || seq)::uuid.
func bulkID(seq int) string {
	return uuid.UUID(md5.Sum([]byte("bulk-" + strconv.Itoa(seq)))).String()
}

// endOffsets returns the sum of topic's partitions' end offsets, 0 if the
// topic does not exist.
func endOffsets(t *testing.T, e *env, topic string) int64 {
	t.Helper()
	var n int64
	for _, end := range partitionEnds(t, e, topic) {
		n += end
	}
	return n
}

// partitionEnds returns the end offset of each partition of topic, none
// if the topic does not exist.
func partitionEnds(t *testing.T, e *env, topic string) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.broker.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for i := range partitions {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = int32(i)
		rp.Timestamp = -1 // the end
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("list offsets of %s: %v", topic, err)
	}
	ends := make(map[int32]int64)
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
				if errors.Is(err, kerr.UnknownTopicOrPartition) {
					continue
				}
				t.Fatalf("list offsets of %s/%d: %v", topic, rp.Partition, err)
			}
			ends[rp.Partition] = rp.Offset
		}
	}
	return ends
}

// procStatus returns the field of /proc/pid/status, in bytes.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read memory of relay pid %d: %v", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("/proc/%d/status: %s: %v", pid, sc.Text(), err)
			}
			return kb << 10
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// metricLines returns the named metrics of p, "name=value" joined by spaces.
func metricLines(t *testing.T, p *proc, names ...string) string {
	t.Helper()
	p.mu.Lock()
	addr := p.metrics
	p.mu.Unlock()
	if addr == "" {
		return "(no metrics address logged)"
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return fmt.Sprintf("(scrape: %v)", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Sprintf("(scrape: %v)", err)
	}
	var out []string
	for line := range strings.SplitSeq(string(body), "\n") {
		for _, name := range names {
			if strings.HasPrefix(line, name+" ") {
				out = append(out, strings.Replace(line, " ", "=", 1))
			}
		}
	}
	return strings.Join(out, " ")
}

// plainRelayBin returns a relay binary built without the race detector,
// whose memory is the relay's own: relayBin, or one it builds if relayBin
// was built with -race (which multiplies memory several times).
func plainRelayBin(t *testing.T) string {
	t.Helper()
	info, err := buildinfo.ReadFile(relayBin)
	if err != nil {
		t.Fatalf("read build info of %s: %v", relayBin, err)
	}
	race := false
	for _, s := range info.Settings {
		if s.Key == "-race" && s.Value == "true" {
			race = true
		}
	}
	if !race {
		return relayBin
	}
	bin := filepath.Join(t.TempDir(), "outbox-relay")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/outbox-relay").CombinedOutput()
	if err != nil {
		t.Fatalf("build outbox-relay without -race: %v\n%s", err, out)
	}
	t.Logf("%s is built with -race; built %s without it, to measure the relay's own memory", relayBin, bin)
	return bin
}
