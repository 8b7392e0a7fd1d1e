package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// stagePage is a relay's page with metricStage: receive and publish
// observed, acknowledge with no observations, no send (a relay from before
// that stage), and a series of another metric that must not mix in.
const stagePage = `# HELP outbox_relay_stage_latency_seconds Latency of each stage.
# TYPE outbox_relay_stage_latency_seconds histogram
outbox_relay_stage_latency_seconds_bucket{stage="receive",le="0.001"} 50
outbox_relay_stage_latency_seconds_bucket{stage="receive",le="0.002"} 100
outbox_relay_stage_latency_seconds_bucket{stage="receive",le="+Inf"} 100
outbox_relay_stage_latency_seconds_sum{stage="receive"} 0.1
outbox_relay_stage_latency_seconds_count{stage="receive"} 100
outbox_relay_stage_latency_seconds_bucket{stage="publish",le="0.001"} 10
outbox_relay_stage_latency_seconds_bucket{stage="publish",le="0.002"} 10
outbox_relay_stage_latency_seconds_bucket{stage="publish",le="+Inf"} 10
outbox_relay_stage_latency_seconds_bucket{le="0.001",stage="acknowledge"} 0
outbox_relay_stage_latency_seconds_bucket{le="0.002",stage="acknowledge"} 0
outbox_relay_stage_latency_seconds_bucket{le="+Inf",stage="acknowledge"} 0
outbox_relay_end_to_end_latency_seconds_bucket{le="0.001"} 7
outbox_relay_end_to_end_latency_seconds_bucket{le="+Inf"} 7
outbox_relay_events_published_total{topic="outbox.bench"} 100
`

// oldPage is a relay's page from before metricStage.
const oldPage = `outbox_relay_end_to_end_latency_seconds_bucket{le="0.001"} 7
outbox_relay_end_to_end_latency_seconds_bucket{le="+Inf"} 7
outbox_relay_events_published_total{topic="outbox.bench"} 7
`

func mustParse(t *testing.T, page string) scrape {
	t.Helper()
	s, err := parseScrape(strings.NewReader(page))
	if err != nil {
		t.Fatalf("parseScrape: %v", err)
	}
	return s
}

func TestReadStages(t *testing.T) {
	after := mustParse(t, stagePage)
	// Half of receive's observations, all in its first bucket, came before.
	before := mustParse(t, `outbox_relay_stage_latency_seconds_bucket{stage="receive",le="0.001"} 50
outbox_relay_stage_latency_seconds_bucket{stage="receive",le="0.002"} 50
outbox_relay_stage_latency_seconds_bucket{stage="receive",le="+Inf"} 50
`)
	for _, tc := range []struct {
		name          string
		before, after scrape
		want          stageLatency
	}{
		{
			name:  "since the start",
			after: after,
			want: stageLatency{
				"receive": {
					0.5:  {value: 0.001, lower: 0, upper: 0.001},
					0.99: {value: 0.00198, lower: 0.001, upper: 0.002},
				},
				"publish": {
					0.5:  {value: 0.0005, lower: 0, upper: 0.001},
					0.99: {value: 0.00099, lower: 0, upper: 0.001},
				},
				"acknowledge": {},
			},
		},
		{
			name:   "between scrapes",
			before: before,
			after:  after,
			want: stageLatency{
				"receive": {
					0.5:  {value: 0.0015, lower: 0.001, upper: 0.002},
					0.99: {value: 0.00199, lower: 0.001, upper: 0.002},
				},
				"publish": {
					0.5:  {value: 0.0005, lower: 0, upper: 0.001},
					0.99: {value: 0.00099, lower: 0, upper: 0.001},
				},
				"acknowledge": {},
			},
		},
		{name: "no series", after: mustParse(t, oldPage), want: nil},
		{name: "empty page", after: mustParse(t, ""), want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := readStages(tc.before, tc.after, []float64{0.5, 0.99})
			approx := cmp.Comparer(func(a, b float64) bool { return a == b || (a-b < 1e-12 && b-a < 1e-12) })
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(bucketQuantile{}), approx); diff != "" {
				t.Errorf("readStages (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStageCell(t *testing.T) {
	withStages := []result{{stages: readStages(scrape{}, mustParse(t, stagePage), quantiles)}}
	without := []result{{stages: readStages(scrape{}, mustParse(t, oldPage), quantiles)}}
	for _, tc := range []struct {
		name  string
		rs    []result
		stage string
		want  string
	}{
		{name: "receive", rs: withStages, stage: "receive", want: "1 / 1.98 / 2"},
		{name: "no observations", rs: withStages, stage: "acknowledge", want: "n/a / n/a / n/a"},
		{name: "no series", rs: without, stage: "receive", want: "n/a / n/a / n/a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := stageCell(tc.rs, tc.stage, quantiles); got != tc.want {
				t.Errorf("stageCell(%s) = %q, want %q", tc.stage, got, tc.want)
			}
		})
	}
}

func TestBacklogStagesText(t *testing.T) {
	byW := map[string][]result{
		"W1": {{stages: readStages(scrape{}, mustParse(t, stagePage), quantiles)}},
		"W2": {{stages: readStages(scrape{}, mustParse(t, oldPage), quantiles)}},
	}
	var b strings.Builder
	backlogStagesText(&b, byW, []string{"W1", "W2"})
	rows := map[string]string{}
	for _, line := range strings.Split(b.String(), "\n") {
		if w, ok := strings.CutPrefix(line, "| W"); ok {
			rows["W"+w[:1]] = line
		}
	}
	want := map[string]string{
		"W1": "| W1 | n/a | n/a | 1 (0, 1] | 1.98 (1, 2] | 0.5 (0, 1] | 0.99 (0, 1] | n/a | n/a |",
		"W2": "| W2 | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |",
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("backlogStagesText rows (-want +got):\n%s", diff)
	}
}
