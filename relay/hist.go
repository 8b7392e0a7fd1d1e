package relay

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/schema"
)

// latencyBuckets bound the latency histograms, in seconds: fine below 50 ms,
// with bounds at 5 and 25 ms so that p99 and p999 targets can be read off
// exactly.
var latencyBuckets = [...]float64{0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// hist is a latency histogram over latencyBuckets that the Relay updates
// under its mutex, which it holds there anyway, and Prometheus reads at
// scrape time. An observation is a bucket search and two additions; a
// prometheus.Histogram's is several atomic operations, and an event made
// five of them.
type hist struct {
	counts [len(latencyBuckets) + 1]uint64 // per bucket, not cumulative; the last is +Inf
	sum    float64
}

// observe counts v seconds in the first bucket whose upper bound is at
// least v, as Prometheus does.
func (h *hist) observe(v float64) {
	i := 0
	for i < len(latencyBuckets) && v > latencyBuckets[i] {
		i++
	}
	h.counts[i]++
	h.sum += v
}

// metric returns h as a constant Prometheus histogram of desc with labels.
func (h *hist) metric(desc *prometheus.Desc, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(latencyBuckets))
	var n uint64
	for i, bound := range latencyBuckets {
		n += h.counts[i]
		buckets[bound] = n
	}
	n += h.counts[len(latencyBuckets)]
	return prometheus.MustNewConstHistogram(desc, n, h.sum, buckets, labels...)
}

// stages are the Relay's latency histograms: end to end, and the stages
// that add up to it.
type stages struct {
	latency hist // commit to the sink's acknowledgement
	// commit to the server sending the row, sent to read from the stream,
	// read to handed to the Sink, handed to acknowledged
	send, receive, publish, acknowledge hist
}

// read observes the stages up to handing ev, read from the stream, to the
// Sink at handed; without the server's send time, receive runs from the
// commit.
func (s *stages) read(ev *schema.Event, handed time.Time) {
	if ev.Sent.IsZero() {
		s.receive.observe(max(0, ev.Received.Sub(ev.CommitTime).Seconds()))
	} else {
		s.send.observe(max(0, ev.Sent.Sub(ev.CommitTime).Seconds()))
		s.receive.observe(max(0, ev.Received.Sub(ev.Sent).Seconds()))
	}
	s.publish.observe(handed.Sub(ev.Received).Seconds())
}

// stageNames label the stage histograms, in the order Collect serves them.
var stageNames = [...]string{"send", "receive", "publish", "acknowledge"}

// histograms serves the Relay's stages at scrape time.
type histograms struct {
	r              *Relay
	latency, stage *prometheus.Desc
}

func newHistograms(r *Relay) *histograms {
	return &histograms{
		r: r,
		latency: prometheus.NewDesc("outbox_relay_end_to_end_latency_seconds",
			"Time from a transaction's commit to the sink's acknowledgement of each of its events.", nil, nil),
		stage: prometheus.NewDesc("outbox_relay_stage_latency_seconds",
			"Time each event spends in each stage between commit and acknowledgement: "+
				"send, from the transaction's commit to the database server sending the row on the replication stream (both by the server's clock); "+
				"receive, from the server sending the row to the relay reading it; "+
				"publish, from reading it to handing it to the sink; acknowledge, from handing it to the sink to the sink's acknowledgement.",
			[]string{"stage"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (h *histograms) Describe(ch chan<- *prometheus.Desc) {
	ch <- h.latency
	ch <- h.stage
}

// Collect implements prometheus.Collector, copying the counts under the
// Relay's mutex.
func (h *histograms) Collect(ch chan<- prometheus.Metric) {
	h.r.mu.Lock()
	s := h.r.stages
	h.r.mu.Unlock()
	ch <- s.latency.metric(h.latency)
	for i, st := range [...]*hist{&s.send, &s.receive, &s.publish, &s.acknowledge} {
		ch <- st.metric(h.stage, stageNames[i])
	}
}
