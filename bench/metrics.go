package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
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
	// metricStage has a label stage, one of stages.
	metricStage = "outbox_relay_stage_latency_seconds"

	// Exactly-once mode only.
	metricTxnCommitted = "outbox_relay_kafka_transactions_committed_total"
	metricTxnAborted   = "outbox_relay_kafka_transactions_aborted_total"
	metricTxnCommit    = "outbox_relay_kafka_transaction_commit_duration_seconds"
)

// scrape is one reading of a Prometheus text page: each series' value by
// metric name, summed over labels, and the le buckets of histograms, summed
// over labels and by series.
type scrape struct {
	sums    map[string]float64
	buckets map[string]map[float64]float64 // histogram name -> le -> cumulative count
	series  map[seriesKey]map[float64]float64
}

// seriesKey names one histogram series: its name and its labels other than
// le, as the page writes them ({stage="receive"}; "" for none).
type seriesKey struct{ name, labels string }

// httpClient reads the relay's pages. It asks for them uncompressed: the
// relay would otherwise spend CPU gzipping every scrape, which the
// benchmark would count against it.
var httpClient = &http.Client{
	Timeout:   5 * time.Second,
	Transport: &http.Transport{DisableCompression: true},
}

// scrapeMetrics reads the page at url.
func scrapeMetrics(ctx context.Context, url string) (scrape, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return scrape{}, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return scrape{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return scrape{}, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	s, err := parseScrape(resp.Body)
	if err != nil {
		return s, fmt.Errorf("read %s: %w", url, err)
	}
	return s, nil
}

// parseScrape reads a page in the Prometheus text format. Lines it does not
// understand are skipped.
func parseScrape(r io.Reader) (scrape, error) {
	s := scrape{sums: map[string]float64{}, buckets: map[string]map[float64]float64{}, series: map[seriesKey]map[float64]float64{}}
	sc := bufio.NewScanner(r)
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
					add(s.buckets, h, bound, v)
					add(s.series, seriesKey{name: h, labels: withoutLabel(labels, "le")}, bound, v)
				}
			}
			continue
		}
		s.sums[name] += v
	}
	return s, sc.Err()
}

// add adds v to m[k][bound].
func add[K comparable](m map[K]map[float64]float64, k K, bound, v float64) {
	if m[k] == nil {
		m[k] = map[float64]float64{}
	}
	m[k][bound] += v
}

// label returns the value of label name in a {a="x",b="y"} string.
func label(labels, name string) (string, bool) {
	for _, pair := range labelPairs(labels) {
		if k, v, ok := strings.Cut(pair, "="); ok && k == name {
			return strings.Trim(v, `"`), true
		}
	}
	return "", false
}

// withoutLabel returns labels, a {a="x",b="y"} string, less label name; ""
// if none is left.
func withoutLabel(labels, name string) string {
	var kept []string
	for _, pair := range labelPairs(labels) {
		if k, _, _ := strings.Cut(pair, "="); k != name {
			kept = append(kept, pair)
		}
	}
	if len(kept) == 0 {
		return ""
	}
	return "{" + strings.Join(kept, ",") + "}"
}

// labelPairs splits {a="x",b="y"} into a="x" and b="y". Values holding a
// comma or an escaped quote, which the relay's bounded labels never do,
// are not split correctly.
func labelPairs(labels string) []string {
	labels = strings.TrimSuffix(strings.TrimPrefix(labels, "{"), "}")
	if labels == "" {
		return nil
	}
	return strings.Split(labels, ",")
}

// histogram is the cumulative bucket counts of a histogram, bounds
// ascending, the last +Inf.
type histogram struct {
	bounds []float64
	counts []float64
}

// histogramOf returns histogram name of s, summed over its labels.
func (s scrape) histogramOf(name string) histogram {
	return histogramFrom(s.buckets[name])
}

// histogramWhere returns histogram name of s summed over the series whose
// label key has value; empty if there is none.
func (s scrape) histogramWhere(name, key, value string) histogram {
	sum := map[float64]float64{}
	for k, bs := range s.series {
		if v, ok := label(k.labels, key); k.name != name || !ok || v != value {
			continue
		}
		for b, n := range bs {
			sum[b] += n
		}
	}
	return histogramFrom(sum)
}

// histogramFrom orders buckets, le -> cumulative count, by bound.
func histogramFrom(buckets map[float64]float64) histogram {
	var h histogram
	for b := range buckets {
		h.bounds = append(h.bounds, b)
	}
	sort.Float64s(h.bounds)
	for _, b := range h.bounds {
		h.counts = append(h.counts, buckets[b])
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
