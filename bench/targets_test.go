package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestTargets(t *testing.T) {
	// W2: pg_recvlogical 10 s, the relay confirms at 5 s, the consumer has
	// every row at 8 s: 2.0 to confirm, 1.25 with the consumer in the loop.
	w2 := result{workload: "W2", base: "W2", run: 1, rows: 1_000_000, relay: 5, ack: 5, consumer: 8, drains: []drain{{seconds: 10}}, relayCPU: 1.2, relayRSS: 40e6}
	w4 := result{workload: "W4", base: "W4", run: 1, rows: 1000, relay: 2, ack: 2, consumer: -1, drains: []drain{{seconds: 1}}, relayCPU: 1, relayRSS: 100e6}
	w3 := result{workload: "W3", base: "W3", run: 1, rows: 1000, relayRSS: 70e6,
		hist:     map[float64]bucketQuantile{0.99: {value: 0.004, lower: 0.003, upper: 0.005}, 0.999: {value: 0.012, lower: 0.01, upper: 0.015}},
		consumed: map[float64]float64{0.99: 0.0045, 0.999: 0.021}}
	for _, tc := range []struct {
		name  string
		opts  options
		fsync string
		cores int
		byW   map[string][]result
		want  []string
	}{
		{
			name:  "backlogs",
			opts:  options{w3Writers: 8},
			fsync: "on",
			byW:   map[string][]result{"W2": {w2}, "W4": {w4}},
			want: []string{
				"W4 relay ≥ 0.8 × pg_recvlogical (median, to the slot's confirmation): 0.50, **not met** (to ack 0.50)",
				"W4 relay peak RSS ≤ 64 MB: 100.0 MB at most, **not met**",
				"W2 ≥ 1.2 × pg_recvlogical with the consumer in the loop (median, until the consumer had every row): 1.25, **met** (relay to confirm 2.00, to ack 2.00)",
				"W2 relay CPU ≤ 1.5 µs per row: 1.20 µs, **met**",
			},
		},
		{
			name:  "CPU of the others measured",
			opts:  options{w3Writers: 8},
			fsync: "on",
			cores: 2,
			// W4: the others spent 10 CPU-s, 5 s on two cores, against
			// pg_recvlogical's 1 s. W2: the walsender's 8 s on one core
			// bound it, not the others' 6 s on two.
			byW: map[string][]result{
				"W4": {func() result { r := w4; r.senderCPU, r.brokerCPU, r.benchCPU = 4, 3, 3; return r }()},
				"W2": {func() result { r := w2; r.senderCPU, r.brokerCPU, r.benchCPU = 8, 2, 2; return r }()},
			},
			want: []string{
				"W4 relay ≥ 0.8 × pg_recvlogical (median, to the slot's confirmation): 0.50, **not met** (to ack 0.50); a relay spending no CPU could have reached 0.20 here, the walsender, broker and consumer spending what they did on 2 cores",
				"W4 relay peak RSS ≤ 64 MB: 100.0 MB at most, **not met**",
				"W2 ≥ 1.2 × pg_recvlogical with the consumer in the loop (median, until the consumer had every row): 1.25, **met** (relay to confirm 2.00, to ack 2.00); a relay spending no CPU could have reached 1.25 here, the walsender, broker and consumer spending what they did on 2 cores",
				"W2 relay CPU ≤ 1.5 µs per row: 1.20 µs, **met**",
			},
		},
		{
			name:  "no consumer",
			opts:  options{w3Writers: 8},
			fsync: "on",
			byW:   map[string][]result{"W2": {func() result { r := w2; r.consumer = -1; return r }()}},
			want: []string{
				"W2 ≥ 1.2 × pg_recvlogical with the consumer in the loop: not measured (--consume=false); relay to confirm 2.00",
				"W2 relay CPU ≤ 1.5 µs per row: 1.20 µs, **met**",
			},
		},
		{
			name:  "W3 off target conditions",
			opts:  options{w3Writers: 4},
			fsync: "off",
			byW:   map[string][]result{"W3": {w3}, "W4": {w4}},
			want: []string{
				"W4 relay ≥ 0.8 × pg_recvlogical (median, to the slot's confirmation): 0.50, **not met** (to ack 0.50)",
				"W4 relay peak RSS ≤ 64 MB: 100.0 MB at most, **not met**",
				"W3 with 8 writers, fsync on, consumer in the loop: commit-to-consumer p99 ≤ 5 ms: 4.5 ms, **met**; relay histogram (commit to ack) 4 ms (the target is for 8 writers and fsync=on; this run had --w3-writers 4, fsync=off)",
				"W3 with 8 writers, fsync on, consumer in the loop: commit-to-consumer p999 ≤ 20 ms: 21 ms, **not met**; relay histogram (commit to ack) 12 ms (the target is for 8 writers and fsync=on; this run had --w3-writers 4, fsync=off)",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := report{opts: tc.opts, machine: machine{Fsync: tc.fsync, Cores: tc.cores}}
			got := r.targets(tc.byW)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("targets (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPeakRSS(t *testing.T) {
	byW := map[string][]result{
		"W1": {{relayRSS: 30e6}, {relayRSS: 90e6}},
		"W4": {{relayRSS: 80e6}},
	}
	if w, mb := (report{}).peakRSS(byW); w != "W1" || mb != 90 {
		t.Errorf("peakRSS = %s, %g MB, want W1, 90 MB", w, mb)
	}
}

func TestFreeRelayRatio(t *testing.T) {
	base := result{drains: []drain{{seconds: 6}}, senderCPU: 3, brokerCPU: 4, benchCPU: 1}
	for _, tc := range []struct {
		name  string
		r     result
		cores int
		want  float64
	}{
		{"the others on two cores", base, 2, 6.0 / 4},
		{"the walsender on one core", base, 4, 6.0 / 3},
		{"one core", base, 1, 6.0 / 8},
		{"broker not measured", func() result { r := base; r.brokerCPU = -1; return r }(), 2, -1},
		{"walsender not measured", func() result { r := base; r.senderCPU = -1; return r }(), 2, -1},
		{"no pg_recvlogical", func() result { r := base; r.drains = nil; return r }(), 2, -1},
		{"nothing spent", result{drains: []drain{{seconds: 6}}}, 2, -1},
	} {
		if got := tc.r.freeRelayRatio(tc.cores); got != tc.want {
			t.Errorf("%s: freeRelayRatio(%d) = %g, want %g", tc.name, tc.cores, got, tc.want)
		}
	}
}
