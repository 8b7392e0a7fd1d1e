package main

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLookupWorkload(t *testing.T) {
	for _, tc := range []struct {
		name         string
		ok, eo       bool
		base, ident  string
		latency      bool
		wantDelivery string
	}{
		{name: "W2", ok: true, base: "W2", ident: "w2", wantDelivery: "at-least-once"},
		{name: "W2-EO", ok: true, eo: true, base: "W2", ident: "w2_eo", wantDelivery: "exactly-once"},
		{name: "W3-EO", ok: true, eo: true, base: "W3", ident: "w3_eo", latency: true, wantDelivery: "exactly-once"},
		{name: "W5"},
		{name: "W2-EO-EO"},
		{name: "-EO"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, ok := lookupWorkload(tc.name)
			if ok != tc.ok {
				t.Fatalf("lookupWorkload(%q) ok = %v, want %v", tc.name, ok, tc.ok)
			}
			if !ok {
				return
			}
			got := []any{w.name, w.base, w.exactlyOnce, w.ident(), w.latency, w.delivery()}
			want := []any{tc.name, tc.base, tc.eo, tc.ident, tc.latency, tc.wantDelivery}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("lookupWorkload(%q) (-want +got):\n%s", tc.name, diff)
			}
		})
	}
}

func TestTurns(t *testing.T) {
	got := turns([]string{"W1", "W2", "W3-EO", "W2-EO", "W3", "W4-EO"})
	want := [][]string{{"W1"}, {"W2", "W2-EO"}, {"W3-EO", "W3"}, {"W4-EO"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("turns (-want +got):\n%s", diff)
	}
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		workloads []string
		interval  time.Duration
		wantErr   bool
	}{
		{name: "default", workloads: []string{"W1", "W2", "W2-EO", "W3", "W3-EO", "W4"}, interval: 100 * time.Millisecond},
		{name: "lower case", args: []string{"--workloads", "w2, w2-eo"}, workloads: []string{"W2", "W2-EO"}, interval: 100 * time.Millisecond},
		{name: "interval", args: []string{"--workloads", "W3-EO", "--relay-env", "OUTBOX_RELAY_KAFKA_TRANSACTION_INTERVAL=50ms"}, workloads: []string{"W3-EO"}, interval: 50 * time.Millisecond},
		{name: "bad interval", args: []string{"--relay-env", "OUTBOX_RELAY_KAFKA_TRANSACTION_INTERVAL=soon"}, wantErr: true},
		{name: "unknown", args: []string{"--workloads", "W2-XO"}, wantErr: true},
		{name: "twice", args: []string{"--workloads", "W2,W2"}, wantErr: true},
		{name: "profile EO", args: []string{"--profile-workload", "W2-EO"}, workloads: []string{"W1", "W2", "W2-EO", "W3", "W3-EO", "W4"}, interval: 100 * time.Millisecond},
		{name: "profile W3", args: []string{"--profile-workload", "W3-EO"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseFlags(%q) error = %v, want error %v", tc.args, err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tc.workloads, o.workloads); diff != "" {
				t.Errorf("parseFlags(%q) workloads (-want +got):\n%s", tc.args, diff)
			}
			if o.txnInterval != tc.interval {
				t.Errorf("parseFlags(%q) txnInterval = %s, want %s", tc.args, o.txnInterval, tc.interval)
			}
		})
	}
}

func TestDrainRatio(t *testing.T) {
	w2 := []result{{workload: "W2", base: "W2", run: 1, rows: 1000, relay: 1}, {workload: "W2", base: "W2", run: 2, rows: 1000, relay: 2}}
	eo := []result{{workload: "W2-EO", base: "W2", exactlyOnce: true, run: 2, rows: 1000, relay: 2.5}, {workload: "W2-EO", base: "W2", exactlyOnce: true, run: 3, rows: 1000, relay: 1}}
	byW := map[string][]result{"W2": w2, "W2-EO": eo}
	var got []float64
	for _, p := range pairs(byW, "W2-EO") {
		got = append(got, p.drainRatio())
	}
	// Run 2 pairs with run 2 (0.8); run 3 has no counterpart.
	if diff := cmp.Diff([]float64{0.8, -1}, got); diff != "" {
		t.Errorf("drainRatio (-want +got):\n%s", diff)
	}
}

func TestParseFlagsMeasurement(t *testing.T) {
	type got struct {
		Writers                   int
		Consume, W3Consume, Fsync bool
	}
	for _, tc := range []struct {
		name string
		args []string
		want got
	}{
		{name: "default", want: got{Writers: 8, Consume: true, W3Consume: true, Fsync: true}},
		{name: "off", args: []string{"--consume=false", "--w3-consume=false", "--pg-fsync=false", "--w3-writers", "4"},
			want: got{Writers: 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args)
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", tc.args, err)
			}
			g := got{Writers: o.w3Writers, Consume: o.consume, W3Consume: o.w3Consume, Fsync: o.pgFsync}
			if diff := cmp.Diff(tc.want, g); diff != "" {
				t.Errorf("parseFlags(%q) (-want +got):\n%s", tc.args, diff)
			}
		})
	}
}

// TestSchedule checks which runs one run number of a group makes, in which
// order, and their scale: W1 and W2 through every sink of --sinks, the
// others through Kafka only, and --sink-scale only when it is smaller than
// --scale.
func TestSchedule(t *testing.T) {
	type run struct {
		Title, Ident string
		Rows         int64
	}
	all := []string{"kafka", "nats", "rabbitmq", "redis"}
	for _, tc := range []struct {
		name  string
		group []string
		o     options
		want  []run
	}{
		{name: "W2 and W2-EO", group: []string{"W2", "W2-EO"}, o: options{scale: 1, sinkScale: 0.25, sinks: all},
			want: []run{{"W2", "w2", 2_000_000}, {"W2 (nats)", "w2_nats", 500_000}, {"W2 (rabbitmq)", "w2_rabbitmq", 500_000}, {"W2 (redis)", "w2_redis", 500_000}, {"W2-EO", "w2_eo", 2_000_000}}},
		{name: "small scale", group: []string{"W1"}, o: options{scale: 0.02, sinkScale: 0.25, sinks: all},
			want: []run{{"W1", "w1", 4000}, {"W1 (nats)", "w1_nats", 4000}, {"W1 (rabbitmq)", "w1_rabbitmq", 4000}, {"W1 (redis)", "w1_redis", 4000}}},
		{name: "Kafka only", group: []string{"W4"}, o: options{scale: 1, sinkScale: 0.25, sinks: all},
			want: []run{{"W4", "w4", 100_000}}},
		{name: "no kafka", group: []string{"W1"}, o: options{scale: 1, sinkScale: 0.5, sinks: []string{"redis"}},
			want: []run{{"W1 (redis)", "w1_redis", 100_000}}},
		{name: "no kafka, W3", group: []string{"W3", "W3-EO"}, o: options{scale: 1, sinkScale: 0.5, sinks: []string{"nats"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []run
			for _, w := range schedule(tc.group, tc.o) {
				got = append(got, run{w.title(), w.ident(), w.rows})
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("schedule(%q) (-want +got):\n%s", tc.group, diff)
			}
		})
	}
}

func TestParseFlagsSinks(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		sinks     []string
		sinkScale float64
		wantErr   bool
	}{
		{name: "default", sinks: []string{"kafka", "nats", "rabbitmq", "redis"}, sinkScale: 0.25},
		{name: "some", args: []string{"--sinks", " Redis,kafka", "--sink-scale", "0.1"}, sinks: []string{"redis", "kafka"}, sinkScale: 0.1},
		{name: "rabbitmq", args: []string{"--sinks", "kafka,RabbitMQ"}, sinks: []string{"kafka", "rabbitmq"}, sinkScale: 0.25},
		{name: "unknown", args: []string{"--sinks", "kafka,rabbit"}, wantErr: true},
		{name: "twice", args: []string{"--sinks", "nats,nats"}, wantErr: true},
		{name: "none", args: []string{"--sinks", ","}, wantErr: true},
		{name: "zero scale", args: []string{"--sink-scale", "0"}, wantErr: true},
		{name: "nothing to run", args: []string{"--sinks", "nats", "--workloads", "W3,W4"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseFlags(%q) error = %v, want error %v", tc.args, err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tc.sinks, o.sinks); diff != "" || o.sinkScale != tc.sinkScale {
				t.Errorf("parseFlags(%q) = sinks %q, sink scale %g; want %q, %g", tc.args, o.sinks, o.sinkScale, tc.sinks, tc.sinkScale)
			}
		})
	}
}
