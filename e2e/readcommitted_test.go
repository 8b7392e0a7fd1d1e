package e2e

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/schema"
)

// The exactly-once tests (exactlyonce_test.go) reuse the fault tests'
// workload, ledger and report, and read the topics as a consumer of
// transactional producers should: with read_committed, through franz-go
// and again through kcat (librdkafka), an independent client. Neither
// sees the relay's fence topic: the franz-go consumer matches ^outbox\.
// and kcat reads the outbox topics by name.

// exactlyOnce is the setting that turns exactly-once delivery on.
const exactlyOnce = "OUTBOX_RELAY_DELIVERY=exactly-once"

// checkpointTopic is the relay-internal topic holding the fences.
const checkpointTopic = "__outbox_relay_checkpoints"

// readCommittedConsumer reads every outbox topic of the broker from the
// start, as the harness's consumer does, but only records of committed
// Kafka transactions, stopping at each partition's last stable offset.
func (e *env) readCommittedConsumer() *consumer {
	e.t.Helper()
	return e.consumer(kgo.FetchIsolationLevel(kgo.ReadCommitted()))
}

// newExactlyOnceRun returns a fault run whose collector reads with
// read_committed; its relays get exactlyOnce before their own settings.
func newExactlyOnceRun(t *testing.T, e *env) *faultRun {
	return &faultRun{t: t, e: e, c: newCollector(e.readCommittedConsumer())}
}

// eoRelay starts a relay in exactly-once mode with faultSettings and
// extraEnv.
func (r *faultRun) eoRelay(extraEnv ...string) *proc {
	r.t.Helper()
	return r.relay(append([]string{exactlyOnce}, extraEnv...)...)
}

// checkExactlyOnce waits for the writers, drains the topics with the
// read_committed collector and fails the test unless every committed row
// arrived exactly once, in per-aggregate commit order, with nothing rolled
// back; then it checks the topics' final contents the same way with kcat,
// and the fence topic. It logs the counts.
func (r *faultRun) checkExactlyOnce() *report {
	r.t.Helper()
	t := r.t
	r.waitWriters()
	rep := r.l.drain(t, r.c, 3*time.Minute, 3*time.Second)
	committed, rolled, txns := r.l.counts()
	t.Logf("read_committed (franz-go): %s", rep)
	t.Logf("read_committed (franz-go): %d committed rows in %d transactions, %d rolled-back rows; rows by number of deliveries: %v",
		committed, txns, rolled, r.c.deliveries())
	rep.assert(t, false)
	// check skips rows in doubt (Reconnect); a second copy of one is
	// still a duplicate.
	if ids := repeatedIDs(r.c.ids); len(ids) > 0 {
		t.Errorf("read_committed (franz-go): %d ids arrived more than once, first: %v", len(ids), ids[:min(len(ids), 5)])
	}

	topics := outboxTopics(r.w)
	kc := kcatRecords(t, r.e.brokers, "read_committed", topics...)
	krep := r.l.check(kc)
	t.Logf("read_committed (kcat): %s", krep)
	if !krep.ok(false) {
		t.Errorf("kcat read_committed check failed: %s\n%s", krep, strings.Join(krep.Problems, "\n"))
	}
	if ids := repeatedIDs(idCounts(kc)); len(ids) > 0 {
		t.Errorf("read_committed (kcat): %d ids arrived more than once, first: %v", len(ids), ids[:min(len(ids), 5)])
	}
	if len(kc) != rep.Records {
		t.Errorf("kcat read %d committed records, franz-go %d", len(kc), rep.Records)
	}
	uc := kcatRecords(t, r.e.brokers, "read_uncommitted", topics...)
	t.Logf("read_uncommitted (kcat): %d records, %d beyond the committed ones (records of aborted Kafka transactions)", len(uc), len(uc)-len(kc))
	r.checkFences(rep)
	logWarnings(t, r.procs...)
	if t.Failed() {
		r.tails()
	}
	return rep
}

// checkFences reads the fence topic with kcat at read_committed: it must
// hold at least one fence. If its values are LSNs in PostgreSQL's text
// form, as the relay writes them today, they must never go back (a fenced
// relay that still committed would write one behind), and the last must be
// at or past every delivered row's commit LSN.
func (r *faultRun) checkFences(rep *report) {
	t := r.t
	t.Helper()
	recs := kcatRecords(t, r.e.brokers, "read_committed", checkpointTopic)
	if len(recs) == 0 {
		t.Errorf("topic %s holds no committed fence", checkpointTopic)
		return
	}
	last := make(map[string]pglogrepl.LSN)
	for _, rec := range recs {
		lsn, err := pglogrepl.ParseLSN(string(rec.Value))
		if err != nil {
			t.Logf("fence record %q (key %q) is not an LSN in text form; fence order not checked", rec.Value, rec.Key)
			return
		}
		if prev, ok := last[string(rec.Key)]; ok && lsn < prev {
			t.Errorf("fence of %q at %s/%d@%d is %s, behind the one before it, %s", rec.Key, rec.Topic, rec.Partition, rec.Offset, lsn, prev)
		}
		last[string(rec.Key)] = lsn
	}
	var newest pglogrepl.LSN
	for _, rec := range r.c.recs {
		if pos, err := schema.ParsePosition(header(rec, "position")); err == nil {
			newest = max(newest, pos.CommitLSN)
		}
	}
	fence := last[r.e.slot]
	if len(last) == 1 {
		for _, l := range last {
			fence = l
		}
	}
	t.Logf("fences: %d committed fence records for keys %v; last fence %s, newest delivered commit LSN %s", len(recs), keysOf(last), fence, newest)
	if fence < newest {
		t.Errorf("last fence %s is behind the newest delivered commit LSN %s", fence, newest)
	}
}

func keysOf(m map[string]pglogrepl.LSN) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// outboxTopics returns the topics w's rows go to.
func outboxTopics(w *workload) []string {
	var ts []string
	for _, typ := range w.Types {
		ts = append(ts, "outbox."+typ)
	}
	return ts
}

// kcatRecords reads topics from the beginning to their end with kcat at
// isolation (read_committed or read_uncommitted) and returns the records
// sorted by topic, partition and offset. It fails the test if kcat is
// missing or fails.
func kcatRecords(t *testing.T, brokers, isolation string, topics ...string) []*kgo.Record {
	t.Helper()
	bin, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatalf("kcat is needed as an independent Kafka client (apt-get install -y kcat): %v", err)
	}
	var recs []*kgo.Record
	for _, topic := range topics {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		cmd := exec.CommandContext(ctx, bin, "-C", "-b", brokers, "-t", topic,
			"-X", "isolation.level="+isolation, "-o", "beginning", "-e", "-q", "-J")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		cancel()
		if err != nil {
			t.Fatalf("kcat -t %s -X isolation.level=%s: %v\n%s", topic, isolation, err, stderr.Bytes())
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var m struct {
				Topic     string   `json:"topic"`
				Partition int32    `json:"partition"`
				Offset    int64    `json:"offset"`
				Headers   []string `json:"headers"`
				Key       *string  `json:"key"`
				Payload   *string  `json:"payload"`
			}
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("kcat -t %s: line %q: %v", topic, sc.Text(), err)
			}
			rec := &kgo.Record{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset}
			if m.Key != nil {
				rec.Key = []byte(*m.Key)
			}
			if m.Payload != nil {
				rec.Value = []byte(*m.Payload)
			}
			for i := 0; i+1 < len(m.Headers); i += 2 {
				rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: m.Headers[i], Value: []byte(m.Headers[i+1])})
			}
			recs = append(recs, rec)
		}
		if err := sc.Err(); err != nil {
			t.Fatalf("kcat -t %s: %v", topic, err)
		}
	}
	slices.SortStableFunc(recs, func(a, b *kgo.Record) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	return recs
}

// idCounts counts recs per id header.
func idCounts(recs []*kgo.Record) map[string]int {
	ids := make(map[string]int)
	for _, r := range recs {
		ids[header(r, "id")]++
	}
	return ids
}

// repeatedIDs returns the ids counted more than once, sorted.
func repeatedIDs(ids map[string]int) []string {
	var rep []string
	for id, n := range ids {
		if n > 1 {
			rep = append(rep, id)
		}
	}
	slices.Sort(rep)
	return rep
}

// txnMetrics are the relay's Kafka transaction metrics at one scrape.
type txnMetrics struct {
	committed, aborted float64
	fence              pglogrepl.LSN
}

// metricsClient scrapes quickly, from any goroutine; it keeps its
// connection.
var metricsClient = &http.Client{Timeout: 2 * time.Second}

// scrapeTxn reads the relay's transaction metrics at addr; unlike scrape
// it returns errors, for loops that scrape while the relay may die.
func scrapeTxn(addr string) (txnMetrics, error) {
	resp, err := metricsClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return txnMetrics{}, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return txnMetrics{}, fmt.Errorf("parse /metrics of %s: %w", addr, err)
	}
	m := txnMetrics{
		committed: value(mfs, "outbox_relay_kafka_transactions_committed_total", nil),
		aborted:   value(mfs, "outbox_relay_kafka_transactions_aborted_total", nil),
		fence:     pglogrepl.LSN(max(0, value(mfs, "outbox_relay_kafka_fence_lsn", nil))),
	}
	if m.committed < 0 {
		return m, fmt.Errorf("/metrics of %s has no outbox_relay_kafka_transactions_committed_total", addr)
	}
	return m, nil
}

// lastTxnMetrics scrapes p, which must be running.
func (p *proc) lastTxnMetrics(t *testing.T) txnMetrics {
	t.Helper()
	m, err := scrapeTxn(p.metricsAddr(t))
	if err != nil {
		t.Errorf("scrape relay (pid %d): %v", p.cmd.Process.Pid, err)
	}
	return m
}

// withPGOptions adds PostgreSQL run-time settings (the libpq options
// parameter, e.g. "-c wal_sender_timeout=5s") to dsn, a URL or a
// keyword/value string.
func withPGOptions(dsn, options string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		return dsn + sep + "options=" + strings.ReplaceAll(url.QueryEscape(options), "+", "%20")
	}
	return dsn + " options='" + strings.ReplaceAll(options, "'", `\'`) + "'"
}

// waitSlotReleased waits until no connection streams from e's slot, so
// that the slot's confirmed position is final, and returns it.
func (e *env) waitSlotReleased(t *testing.T, timeout time.Duration) slotState {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := e.slotState(t)
		if st.activePID == 0 || time.Now().After(deadline) {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// walsenderTimeout reads wal_sender_timeout as a session with dsn gets it.
func walsenderTimeout(t *testing.T, dsn string) string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect with %s: %v", dsn, err)
	}
	defer conn.Close(context.WithoutCancel(t.Context()))
	var v string
	if err := conn.QueryRow(t.Context(), "SHOW wal_sender_timeout").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}
