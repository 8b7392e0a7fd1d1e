package relay

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/outbox-relay/outbox-relay/schema"
)

// metricValue returns the value of a gauge or counter, or the observation
// count of a histogram.
func metricValue(t fataler, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatalf("write %s: %v", c.Desc(), err)
	}
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	t.Fatalf("write %s: not a gauge, counter or histogram", c.Desc())
	return 0
}

// sample is one gathered metric: its type, and its value (a histogram's
// is its observation count).
type sample struct {
	Type  string
	Value float64
}

// gathered returns what reg serves, by metric name.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]sample {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather = %v", err)
	}
	got := make(map[string]sample)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			s := sample{Type: mf.GetType().String()}
			switch mf.GetType() {
			case dto.MetricType_GAUGE:
				s.Value = m.GetGauge().GetValue()
			case dto.MetricType_COUNTER:
				s.Value = m.GetCounter().GetValue()
			case dto.MetricType_HISTOGRAM:
				s.Value = float64(m.GetHistogram().GetSampleCount())
			}
			got[name] = s
		}
	}
	return got
}

// histogram returns the observation count and sum of the histogram reg
// serves as name, with label stage unless stage is empty.
func histogram(t *testing.T, reg *prometheus.Registry, name, stage string) (uint64, float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather = %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if stage == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == stage) {
				return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
			}
		}
	}
	t.Fatalf("no histogram %s{stage=%q} gathered", name, stage)
	return 0, 0
}

func TestMetrics(t *testing.T) {
	h := &held{}
	r, reg := newTestRelay(t, Config{MaxInflightEvents: 7, MaxInflightBytes: 1 << 20}, h.sink())

	type want struct {
		events, bytes, txns, flushed float64
		latency                      uint64
	}
	check := func(step string, w want) {
		t.Helper()
		for _, c := range []struct {
			name string
			got  float64
			want float64
		}{
			{"outbox_relay_inflight_events", metricValue(t, r.m.inflightEvents), w.events},
			{"outbox_relay_inflight_bytes", metricValue(t, r.m.inflightBytes), w.bytes},
			{"outbox_relay_transactions_total", metricValue(t, r.m.transactions), w.txns},
			{"outbox_relay_flushed_lsn", metricValue(t, r.m.flushedLSN), w.flushed},
		} {
			if c.got != c.want {
				t.Errorf("%s: %s = %v, want %v", step, c.name, c.got, c.want)
			}
		}
		if got, _ := histogram(t, reg, "outbox_relay_end_to_end_latency_seconds", ""); got != w.latency {
			t.Errorf("%s: outbox_relay_end_to_end_latency_seconds count = %d, want %d", step, got, w.latency)
		}
	}

	evs := []*schema.Event{newEvent("a", 10), newEvent("b", 200), newEvent("c", 3000)}
	sizes := []float64{float64(evs[0].Size()), float64(evs[1].Size()), float64(evs[2].Size())}
	check("start", want{})

	r.Begin(commitLSN(0), time.Now())
	for _, ev := range evs[:2] {
		if err := r.Insert(t.Context(), ev); err != nil {
			t.Fatalf("Insert = %v", err)
		}
	}
	r.Commit(endLSN(0))
	r.Begin(commitLSN(1), time.Now())
	if err := r.Insert(t.Context(), evs[2]); err != nil {
		t.Fatalf("Insert = %v", err)
	}
	check("three inserted", want{events: 3, bytes: sizes[0] + sizes[1] + sizes[2], txns: 1})

	h.ack(t, 1, nil)
	check("one acked", want{events: 2, bytes: sizes[0] + sizes[2], txns: 1, latency: 1})

	h.ack(t, 0, nil)
	check("first transaction acked", want{events: 1, bytes: sizes[2], txns: 1, flushed: float64(endLSN(0)), latency: 2})

	h.ack(t, 2, errors.New("no leader"))
	check("failed", want{events: 0, bytes: 0, txns: 1, flushed: float64(endLSN(0)), latency: 2})

	r.Commit(endLSN(1))
	check("second committed", want{events: 0, bytes: 0, txns: 2, flushed: float64(endLSN(0)), latency: 2})

	// The registry serves them under these names.
	wantGathered := map[string]sample{
		"outbox_relay_flushed_lsn":                {"GAUGE", float64(endLSN(0))},
		"outbox_relay_inflight_bytes":             {"GAUGE", 0},
		"outbox_relay_inflight_bytes_limit":       {"GAUGE", 1 << 20},
		"outbox_relay_inflight_events":            {"GAUGE", 0},
		"outbox_relay_inflight_events_limit":      {"GAUGE", 7},
		"outbox_relay_transactions_total":         {"COUNTER", 2},
		"outbox_relay_end_to_end_latency_seconds": {"HISTOGRAM", 2},
		// The events came from no stream (Received is zero): only the
		// acknowledgement stage is timed.
		"outbox_relay_stage_latency_seconds{stage=receive}":     {"HISTOGRAM", 0},
		"outbox_relay_stage_latency_seconds{stage=send}":        {"HISTOGRAM", 0},
		"outbox_relay_stage_latency_seconds{stage=publish}":     {"HISTOGRAM", 0},
		"outbox_relay_stage_latency_seconds{stage=acknowledge}": {"HISTOGRAM", 2},
		"outbox_relay_replayed_rows_skipped_total":              {"COUNTER", 0},
		"outbox_relay_errors_total{kind=publish}":               {"COUNTER", 1},
		"outbox_relay_errors_total{kind=dead_letter}":           {"COUNTER", 0},
	}
	got := gathered(t, reg)
	// The failed event holds its transaction back: the lag grows with time.
	if lag := got["outbox_relay_replication_lag_seconds"]; lag.Type != "GAUGE" || lag.Value <= 0 {
		t.Errorf("outbox_relay_replication_lag_seconds = %+v, want a positive gauge", lag)
	}
	delete(got, "outbox_relay_replication_lag_seconds")
	if diff := cmp.Diff(wantGathered, got); diff != "" {
		t.Errorf("gathered metrics (-want +got):\n%s", diff)
	}
}

// TestStageLatency checks that the stages time what they say and add up to
// the end-to-end latency, with and without the server's send time.
func TestStageLatency(t *testing.T) {
	h := &held{}
	r, reg := newTestRelay(t, Config{}, h.sink())
	committed := time.Now().Add(-3 * time.Second)
	sent := committed.Add(time.Second / 2) // half a second in the server
	received := committed.Add(time.Second) // a second to reach the relay
	r.Begin(commitLSN(0), committed)
	for i := range 2 {
		ev := newEvent(fmt.Sprint(i), 10)
		ev.Received = received
		if i == 0 {
			ev.Sent = sent
		}
		if err := r.Insert(t.Context(), ev); err != nil {
			t.Fatalf("Insert = %v", err)
		}
	}
	r.Commit(endLSN(0))
	time.Sleep(20 * time.Millisecond) // the sink takes its time
	h.ackAll(t)

	const stage = "outbox_relay_stage_latency_seconds"
	nSend, send := histogram(t, reg, stage, "send")
	nReceive, receive := histogram(t, reg, stage, "receive")
	nPublish, publish := histogram(t, reg, stage, "publish")
	nAck, ack := histogram(t, reg, stage, "acknowledge")
	nTotal, total := histogram(t, reg, "outbox_relay_end_to_end_latency_seconds", "")
	if nSend != 1 || nReceive != 2 || nPublish != 2 || nAck != 2 || nTotal != 2 {
		t.Fatalf("observations: send %d, receive %d, publish %d, acknowledge %d, end to end %d; want 1 send (one event has a send time), 2 of each other",
			nSend, nReceive, nPublish, nAck, nTotal)
	}
	if send != 0.5 {
		t.Errorf("send stage sums to %.6fs, want 0.5s", send)
	}
	if receive != 1.5 {
		t.Errorf("receive stage sums to %.6fs, want 1.5s (0.5s from the send, 1s from the commit without one)", receive)
	}
	if publish < 2*2 || publish > 2*2.5 { // Received was 2s before Insert
		t.Errorf("publish stage sums to %.6fs, want about 4s (2s each)", publish)
	}
	if ack < 2*0.02 {
		t.Errorf("acknowledge stage sums to %.6fs, want at least 40ms (20ms each)", ack)
	}
	if d := total - (send + receive + publish + ack); d < -1e-3 || d > 1e-3 {
		t.Errorf("stages sum to %.6fs, end to end %.6fs: they should add up", send+receive+publish+ack, total)
	}
}

func TestMetricsDefaultLimits(t *testing.T) {
	_, reg := newTestRelay(t, Config{}, (&held{}).sink())
	got := gathered(t, reg)
	for name, want := range map[string]sample{
		"outbox_relay_inflight_events_limit": {"GAUGE", 5000},
		"outbox_relay_inflight_bytes_limit":  {"GAUGE", DefaultMaxInflightBytes},
	} {
		if got[name] != want {
			t.Errorf("gathered %s = %+v, want %+v", name, got[name], want)
		}
	}
}

func TestNewRegistersOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(Config{}, (&held{}).sink(), nil, reg); err != nil {
		t.Fatalf("first New = %v", err)
	}
	_, err := New(Config{}, (&held{}).sink(), nil, reg)
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Errorf("second New on the same registry = %v, want an AlreadyRegisteredError", err)
	}
}

// TestFlushedMetricAfterConcurrentAcks acknowledges each transaction's
// events from several goroutines at once and then compares
// outbox_relay_flushed_lsn with Flushed. A gauge each ack set after
// releasing the lock could be left behind by an ack that did not move the
// position; the gauge read at scrape time cannot.
func TestFlushedMetricAfterConcurrentAcks(t *testing.T) {
	const (
		rounds = 3000
		events = 8
	)
	h := &held{}
	r, _ := newTestRelay(t, Config{}, h.sink())
	for round := range rounds {
		first := h.len()
		r.Begin(commitLSN(round), commitTime)
		for j := range events {
			if err := r.Insert(t.Context(), newEvent(fmt.Sprint(j), 1)); err != nil {
				t.Fatalf("Insert = %v", err)
			}
		}
		r.Commit(endLSN(round))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := first; i < first+events; i++ {
			done := h.take(t, i)
			wg.Go(func() {
				<-start
				done(nil)
			})
		}
		close(start)
		wg.Wait()
		if got, want := metricValue(t, r.m.flushedLSN), r.Flushed(); got != float64(want) {
			t.Fatalf("round %d, all acked: outbox_relay_flushed_lsn = %s, want Flushed() = %s",
				round, pglogrepl.LSN(got), want)
		}
	}
}
