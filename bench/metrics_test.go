package main

import (
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseScrape(t *testing.T) {
	s := mustParse(t, stagePage)
	if got, want := s.sums[metricPublished], 100.0; got != want {
		t.Errorf("sums[%s] = %g, want %g", metricPublished, got, want)
	}
	// Summed over the stages.
	want := histogram{bounds: []float64{0.001, 0.002, inf}, counts: []float64{60, 110, 110}}
	if diff := cmp.Diff(want, s.histogramOf(metricStage), cmp.AllowUnexported(histogram{})); diff != "" {
		t.Errorf("histogramOf(%s) (-want +got):\n%s", metricStage, diff)
	}
	// The le label may come first.
	want = histogram{bounds: []float64{0.001, 0.002, inf}, counts: []float64{0, 0, 0}}
	if diff := cmp.Diff(want, s.histogramWhere(metricStage, "stage", "acknowledge"), cmp.AllowUnexported(histogram{})); diff != "" {
		t.Errorf("histogramWhere(acknowledge) (-want +got):\n%s", diff)
	}
	if h := s.histogramWhere(metricStage, "stage", "decode"); len(h.bounds) != 0 {
		t.Errorf("histogramWhere(decode) = %+v, want none", h)
	}
	if h := s.histogramWhere(metricLatency, "stage", "receive"); len(h.bounds) != 0 {
		t.Errorf("histogramWhere(%s, stage=receive) = %+v, want none", metricLatency, h)
	}
}

func TestLabel(t *testing.T) {
	for _, tc := range []struct {
		labels, name, want string
		ok                 bool
	}{
		{labels: `{stage="receive",le="0.5"}`, name: "le", want: "0.5", ok: true},
		{labels: `{stage="receive",le="0.5"}`, name: "stage", want: "receive", ok: true},
		{labels: `{substage="x"}`, name: "stage"},
		{labels: ``, name: "le"},
	} {
		got, ok := label(tc.labels, tc.name)
		if got != tc.want || ok != tc.ok {
			t.Errorf("label(%q, %q) = %q, %v, want %q, %v", tc.labels, tc.name, got, ok, tc.want, tc.ok)
		}
	}
	for _, tc := range []struct{ labels, want string }{
		{`{stage="receive",le="0.5"}`, `{stage="receive"}`},
		{`{le="0.5",stage="receive"}`, `{stage="receive"}`},
		{`{le="0.5"}`, ``},
	} {
		if got := withoutLabel(tc.labels, "le"); got != tc.want {
			t.Errorf("withoutLabel(%q, le) = %q, want %q", tc.labels, got, tc.want)
		}
	}
}

var inf = math.Inf(1)
