package errorcount_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/internal/errorcount"
)

// TestKindsGatherAsOneFamily registers every kind in one registry, as the
// relay's packages do, and reads one family with a series per kind.
func TestKindsGatherAsOneFamily(t *testing.T) {
	reg := prometheus.NewRegistry()
	kinds := []string{errorcount.Replication, errorcount.SlotPoll, errorcount.Publish, errorcount.DeadLetter}
	for i, k := range kinds {
		c := errorcount.New(k)
		c.Add(float64(i + 1))
		if err := reg.Register(c); err != nil {
			t.Fatalf("register kind %s: %v", k, err)
		}
	}
	if err := reg.Register(errorcount.New(errorcount.Publish)); err == nil {
		t.Error("a kind registered twice in one registry")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != errorcount.Name {
		t.Fatalf("gathered %d families, want one named %s", len(mfs), errorcount.Name)
	}
	got := map[string]float64{}
	for _, m := range mfs[0].GetMetric() {
		got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
	}
	for i, k := range kinds {
		if got[k] != float64(i+1) {
			t.Errorf("kind %s = %v, want %d", k, got[k], i+1)
		}
	}
}
