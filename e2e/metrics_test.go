package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/schema"
)

// scrape reads the relay's /metrics into metric families by name.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// value sums a family's series whose labels include match (nil: all). A
// histogram counts its observations.
func value(mfs map[string]*dto.MetricFamily, name string, match map[string]string) float64 {
	mf, ok := mfs[name]
	if !ok {
		return -1
	}
	var sum float64
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		ok := true
		for k, v := range match {
			ok = ok && labels[k] == v
		}
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// metricsAddr waits until the relay logs its metrics address.
func (p *proc) metricsAddr(t *testing.T) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		p.mu.Lock()
		addr := p.metrics
		p.mu.Unlock()
		if addr != "" {
			return addr
		}
	}
	t.Fatalf("relay logged no metrics address\n%s", p.logText())
	return ""
}

// eventually polls cond every 200ms for up to timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
	}
	t.Fatalf("%s: not within %s; last: %s", what, timeout, last)
}

func get(addr, path string) (int, string) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func insertEvents(t *testing.T, dsn, aggregateType string, txns, perTxn int) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for i := range txns {
		msgs := make([]schema.Message, perTxn)
		for j := range msgs {
			msgs[j] = schema.Message{AggregateType: aggregateType, AggregateID: fmt.Sprint(i % 7), EventType: "e", Payload: []byte(`{"p":1}`)}
		}
		if err := schema.Insert(t.Context(), conn, msgs...); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMetricsDuringRun scrapes /metrics while the relay works, while the
// broker refuses writes, after it recovers, and after a poison row.
func TestMetricsDuringRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var stalled atomic.Bool
	e.refuseProduce(&stalled)
	p := e.start()
	p.waitStreaming(30 * time.Second)
	addr := p.metricsAddr(t)

	// Every series a dashboard or alert reads exists from the start.
	mfs := scrape(t, addr)
	for _, name := range []string{
		"outbox_relay_replication_lag_bytes", "outbox_relay_replication_lag_seconds", "outbox_relay_slot_retained_wal_bytes",
		"outbox_relay_slot_safe_wal_bytes", "outbox_relay_slot_active", "outbox_relay_streaming", "outbox_relay_standby",
		"outbox_relay_transactions_total", "outbox_relay_end_to_end_latency_seconds", "outbox_relay_publish_duration_seconds",
		"outbox_relay_inflight_events", "outbox_relay_inflight_bytes", "outbox_relay_inflight_events_limit",
		"outbox_relay_inflight_bytes_limit", "outbox_relay_dlq_events_total", "outbox_relay_errors_total",
		"outbox_relay_reconnects_total", "outbox_relay_confirmed_lsn", "outbox_relay_received_lsn", "outbox_relay_build_info",
	} {
		if _, ok := mfs[name]; !ok {
			t.Errorf("/metrics lacks %s at start-up", name)
		}
	}
	if code, body := get(addr, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %q, want 200", code, body)
	}
	eventually(t, 20*time.Second, "/readyz ready", func() (bool, string) {
		code, body := get(addr, "/readyz")
		return code == http.StatusOK, fmt.Sprint(code, " ", body)
	})

	// Normal flow: the published counter matches what the broker holds.
	insertEvents(t, e.dsn, "order", 20, 10)
	c := newCollector(e.consumer())
	eventually(t, 30*time.Second, "200 events published and consumed", func() (bool, string) {
		recs, _ := c.c.poll(t.Context(), 200*time.Millisecond)
		c.add(recs)
		m := scrape(t, addr)
		pub := value(m, "outbox_relay_events_published_total", nil)
		return pub == 200 && len(c.recs) == 200, fmt.Sprintf("published_total %v, consumed %d", pub, len(c.recs))
	})
	m := scrape(t, addr)
	if n := value(m, "outbox_relay_end_to_end_latency_seconds", nil); n < 200 {
		t.Errorf("end-to-end latency observations = %v, want ≥ 200", n)
	}
	// Each stage of the latency is timed for every event: the server
	// stamped when it sent the row, the stream when it read it.
	for _, stage := range []string{"send", "receive", "publish", "acknowledge"} {
		if n := value(m, "outbox_relay_stage_latency_seconds", map[string]string{"stage": stage}); n < 200 {
			t.Errorf("stage_latency_seconds{stage=%s} observations = %v, want ≥ 200", stage, n)
		}
	}
	// The runtime runs on the default core and under the memory limit
	// derived from the in-flight byte bound (8 MiB: 40 MiB).
	if os.Getenv("GOMAXPROCS") == "" {
		if n := value(m, "go_sched_gomaxprocs_threads", nil); n != 1 {
			t.Errorf("go_sched_gomaxprocs_threads = %v, want 1 (--max-procs default)", n)
		}
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if n := value(m, "go_gc_gomemlimit_bytes", nil); n != 40<<20 {
			t.Errorf("go_gc_gomemlimit_bytes = %v, want %d (3 × 8 MiB + 16 MiB)", n, 40<<20)
		}
	}
	if n := value(m, "outbox_relay_events_published_total", map[string]string{"topic": "outbox.order"}); n != 200 {
		t.Errorf("events_published_total{topic=outbox.order} = %v, want 200", n)
	}

	// The broker refuses writes: the lag rises.
	stalled.Store(true)
	insertEvents(t, e.dsn, "order", 10, 10)
	eventually(t, 30*time.Second, "lag rises while the broker refuses writes", func() (bool, string) {
		m := scrape(t, addr)
		b, s := value(m, "outbox_relay_replication_lag_bytes", nil), value(m, "outbox_relay_replication_lag_seconds", nil)
		return b > 0 && s > 1, fmt.Sprintf("lag %v bytes, %v s", b, s)
	})
	stalled.Store(false)
	eventually(t, 60*time.Second, "lag returns near zero after recovery", func() (bool, string) {
		m := scrape(t, addr)
		b, s := value(m, "outbox_relay_replication_lag_bytes", nil), value(m, "outbox_relay_replication_lag_seconds", nil)
		return b < 1<<20 && s == 0 && value(m, "outbox_relay_events_published_total", nil) == 300,
			fmt.Sprintf("lag %v bytes, %v s, published %v", b, s, value(m, "outbox_relay_events_published_total", nil))
	})

	// A poison row is counted by reason.
	insertEvents(t, e.dsn, "bad type!", 1, 1)
	eventually(t, 30*time.Second, "the poison row is counted", func() (bool, string) {
		n := value(scrape(t, addr), "outbox_relay_dlq_events_total", map[string]string{"reason": "topic"})
		return n == 1, fmt.Sprintf("dlq_events_total{reason=topic} = %v", n)
	})
}

// TestReadyzFollowsPostgres stops PostgreSQL under a running relay:
// /readyz fails while it is down and recovers after; /healthz stays up.
func TestReadyzFollowsPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped by -short")
	}
	pg, err := pgtest.Start(t.Context(), pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	e := newEnvOn(t, pg.DSN(""))
	p := e.start()
	p.waitStreaming(30 * time.Second)
	addr := p.metricsAddr(t)
	ready := func() (bool, string) {
		code, body := get(addr, "/readyz")
		return code == http.StatusOK, fmt.Sprint(code, " ", body)
	}
	eventually(t, 20*time.Second, "/readyz ready", ready)

	if err := pg.Shutdown(t.Context(), "fast"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "/readyz fails while PostgreSQL is down", func() (bool, string) {
		ok, why := ready()
		return !ok, why
	})
	if code, body := get(addr, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %q while PostgreSQL is down, want 200", code, body)
	}
	if err := pg.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "/readyz recovers", ready)
	if code, _ := get(addr, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d after recovery, want 200", code)
	}
}

// TestDeployNamesExportedMetrics checks that every metric the dashboard and
// the alert rules in deploy/ read is one the relay exports, as a live scrape
// lists them.
func TestDeployNamesExportedMetrics(t *testing.T) {
	e := newEnv(t)
	p := e.start()
	p.waitStreaming(30 * time.Second)
	addr := p.metricsAddr(t)
	insertEvents(t, e.dsn, "order", 2, 2)
	eventually(t, 30*time.Second, "events published", func() (bool, string) {
		n := value(scrape(t, addr), "outbox_relay_events_published_total", nil)
		return n == 4, fmt.Sprint("published ", n)
	})
	exported := map[string]bool{"up": true}
	for name, mf := range scrape(t, addr) {
		exported[name] = true
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				exported[name+suffix] = true
			}
		}
	}
	used := map[string][]string{}
	for _, file := range []string{"../deploy/dashboards/outbox-relay.json", "../deploy/alerts/outbox-relay.rules.yml"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range metricName.FindAllString(string(b), -1) {
			used[name] = append(used[name], file)
		}
	}
	if len(used) < 10 {
		t.Fatalf("found %d metric names in deploy/, want the dashboard's and rules' many", len(used))
	}
	for name, files := range used {
		switch {
		case exported[name]:
		case name == "outbox_relay_kafka_connect_errors_total":
			// The Kafka client's series appear at their first event.
			t.Logf("%s is not exported until a connection fails", name)
		default:
			t.Errorf("%s, read by %s, is not exported", name, strings.Join(slices.Compact(files), ", "))
		}
	}
}

var metricName = regexp.MustCompile(`\boutbox_relay_[a-z0-9_]+`)
