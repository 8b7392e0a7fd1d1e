package relay

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/testing/protocmp"
	"pgregory.net/rapid"
)

// TestHistMatchesPrometheus checks that hist serves what a
// prometheus.Histogram with the same buckets does after the same
// observations, bucket bounds, negative values and +Inf included.
func TestHistMatchesPrometheus(t *testing.T) {
	desc := prometheus.NewDesc("h", "help", nil, nil)
	rapid.Check(t, func(t *rapid.T) {
		values := rapid.SliceOf(rapid.OneOf(
			rapid.SampledFrom(latencyBuckets[:]),
			rapid.Float64Range(-1, 40),
			rapid.Float64Range(0, 0.02),
		)).Draw(t, "values")
		want := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Help: "help", Buckets: latencyBuckets[:]})
		var got hist
		for _, v := range values {
			want.Observe(v)
			got.observe(v)
		}
		var w, g dto.Metric
		if err := want.Write(&w); err != nil {
			t.Fatalf("write prometheus histogram: %v", err)
		}
		if err := got.metric(desc).Write(&g); err != nil {
			t.Fatalf("write hist: %v", err)
		}
		// A prometheus.Histogram also reports when it was created.
		w.Histogram.CreatedTimestamp = nil
		if diff := cmp.Diff(w.GetHistogram(), g.GetHistogram(), protocmp.Transform(), protocmp.SortRepeatedFields(&dto.Histogram{}, "bucket")); diff != "" {
			t.Fatalf("hist differs from prometheus.Histogram (-want +got):\n%s", diff)
		}
	})
}
