package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Metrics of the relay's /metrics page the benchmark reads.
const (
	metricPublished = "outbox_relay_events_published_total"
	metricLatency   = "outbox_relay_end_to_end_latency_seconds"
	metricPublish   = "outbox_relay_publish_duration_seconds"

	// Exactly-once mode only.
	metricTxnCommitted = "outbox_relay_kafka_transactions_committed_total"
	metricTxnAborted   = "outbox_relay_kafka_transactions_aborted_total"
	metricTxnCommit    = "outbox_relay_kafka_transaction_commit_duration_seconds"
)

// scrape is one reading of a Prometheus text page: each series' value by
// metric name, summed over labels, and the le buckets of histograms.
type scrape struct {
	sums    map[string]float64
	buckets map[string]map[float64]float64 // histogram name -> le -> cumulative count
}

// httpClient reads the relay's pages. It asks for them uncompressed: the
// relay would otherwise spend CPU gzipping every scrape, which the
// benchmark would count against it.
var httpClient = &http.Client{
	Timeout:   5 * time.Second,
	Transport: &http.Transport{DisableCompression: true},
}

// scrapeMetrics reads the page at url.
func scrapeMetrics(ctx context.Context, url string) (scrape, error) {
	s := scrape{sums: map[string]float64{}, buckets: map[string]map[float64]float64{}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return s, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		j := strings.LastIndexByte(line, ' ')
		if j < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[j+1:], 64)
		if err != nil {
			continue
		}
		name, labels := line[:j], ""
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name, labels = name[:i], name[i:]
		}
		if h, ok := strings.CutSuffix(name, "_bucket"); ok {
			if le, ok := label(labels, "le"); ok {
				bound, err := strconv.ParseFloat(le, 64)
				if err == nil {
					if s.buckets[h] == nil {
						s.buckets[h] = map[float64]float64{}
					}
					s.buckets[h][bound] += v
				}
			}
			continue
		}
		s.sums[name] += v
	}
	return s, sc.Err()
}

// label returns the value of label name in a {a="x",b="y"} string.
func label(labels, name string) (string, bool) {
	i := strings.Index(labels, name+`="`)
	if i < 0 {
		return "", false
	}
	rest := labels[i+len(name)+2:]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return "", false
	}
	return rest[:j], true
}

// histogram is the cumulative bucket counts of a histogram, bounds
// ascending, the last +Inf.
type histogram struct {
	bounds []float64
	counts []float64
}

// histogramOf returns histogram name of s.
func (s scrape) histogramOf(name string) histogram {
	var h histogram
	for b := range s.buckets[name] {
		h.bounds = append(h.bounds, b)
	}
	sort.Float64s(h.bounds)
	for _, b := range h.bounds {
		h.counts = append(h.counts, s.buckets[name][b])
	}
	return h
}

// minus returns h's counts less those of an earlier reading.
func (h histogram) minus(earlier histogram) histogram {
	d := histogram{bounds: h.bounds, counts: make([]float64, len(h.counts))}
	for i := range h.counts {
		d.counts[i] = h.counts[i]
		if i < len(earlier.counts) {
			d.counts[i] -= earlier.counts[i]
		}
	}
	return d
}

func (h histogram) total() float64 {
	if len(h.counts) == 0 {
		return 0
	}
	return h.counts[len(h.counts)-1]
}

// bucketQuantile is a quantile estimated from histogram buckets as
// Prometheus's histogram_quantile does: linear interpolation inside the
// bucket holding it.
type bucketQuantile struct {
	value        float64 // seconds
	lower, upper float64 // the bucket's bounds; upper is +Inf past the last
}

// quantile estimates the q-quantile of h.
func (h histogram) quantile(q float64) (bucketQuantile, bool) {
	total := h.total()
	if total == 0 {
		return bucketQuantile{}, false
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for i, upper := range h.bounds {
		if h.counts[i] >= rank {
			if math.IsInf(upper, 1) {
				return bucketQuantile{value: lower, lower: lower, upper: upper}, true
			}
			in := h.counts[i] - below
			v := upper
			if in > 0 {
				v = lower + (upper-lower)*(rank-below)/in
			}
			return bucketQuantile{value: v, lower: lower, upper: upper}, true
		}
		lower, below = upper, h.counts[i]
	}
	return bucketQuantile{}, false
}
