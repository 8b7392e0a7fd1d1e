package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestPerSinkText checks the table of W1 and W2 per sink: Kafka's runs
// beside the others', the exactly-once runs and other workloads left out,
// and the other sinks' runs kept out of Kafka's backlog table.
func TestPerSinkText(t *testing.T) {
	// rows in ack, consumer and ceiling seconds; CPU in seconds.
	run := func(w, sink string, eo bool, n int, rows int64, ack, consumer, ceiling, relayCPU, brokerCPU float64) result {
		base, _ := strings.CutSuffix(w, "-EO")
		return result{workload: w, base: base, exactlyOnce: eo, sink: sink, run: n, rows: rows,
			relay: ack + 0.5, ack: ack, consumer: consumer, drains: []drain{{seconds: ceiling}}, relayCPU: relayCPU, relayRSS: 40e6, brokerCPU: brokerCPU,
			benchCPU: -1, senderCPU: -1, decode: -1, busy: -1}
	}
	r := report{
		machine: machine{RabbitMQ: "rabbitmq-server 3.10.8"},
		opts:    options{sinks: []string{"kafka", "nats", "rabbitmq", "redis"}, sinkScale: 0.25, scale: 1, runs: 2},
		results: []result{
			run("W1", "", false, 1, 200_000, 2, 2.5, 4, 1.6, 0.4),
			run("W1", "", false, 2, 200_000, 4, 5, 4, 2.0, 0.6),
			run("W1", "redis", false, 1, 50_000, 1, 1, 1, 0.5, 0.25),
			run("W1", "rabbitmq", false, 1, 50_000, 2.5, 4, 1, 0.5, 0.5),
			run("W1", "nats", false, 1, 50_000, 2, 2, 1, 0.5, 1),
			run("W2", "", false, 1, 2_000_000, 10, 10, 20, 8, 2),
			run("W2-EO", "", true, 1, 2_000_000, 12, 12, 20, 9, 2),
			run("W2", "nats", false, 1, 500_000, 5, 5, 5, 2.5, 2),
			run("W4", "", false, 1, 100_000, 10, 10, 5, 8, 2),
		},
	}
	text := r.text()
	section := text[strings.Index(text, "### W1 and W2 per sink"):]
	section = section[:strings.Index(section, "### Targets")]
	var got []string
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "| W") {
			got = append(got, line)
		}
	}
	want := []string{
		"| W1 | kafka | 200000 | 75000 (50000–100000) | 60000 (40000–80000) | 50000 (50000–50000) | 1.50 (1.00–2.00) | 1.20 (0.80–1.60) | 9.00 (8.00–10.00) | 40.0 (40.0–40.0) | 2.50 (2.00–3.00) |",
		"| W1 | nats | 50000 | 25000 | 25000 | 50000 | 0.50 | 0.50 | 10.00 | 40.0 | 20.00 |",
		"| W1 | rabbitmq | 50000 | 20000 | 12500 | 50000 | 0.40 | 0.25 | 10.00 | 40.0 | 10.00 |",
		"| W1 | redis | 50000 | 50000 | 50000 | 50000 | 1.00 | 1.00 | 10.00 | 40.0 | 5.00 |",
		"| W2 | kafka | 2000000 | 200000 | 200000 | 100000 | 2.00 | 2.00 | 4.00 | 40.0 | 1.00 |",
		"| W2 | nats | 500000 | 100000 | 100000 | 100000 | 1.00 | 1.00 | 5.00 | 40.0 | 4.00 |",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("W1 and W2 per sink (-want +got):\n%s\n%s", diff, section)
	}
	if want := "- RabbitMQ: rabbitmq-server 3.10.8; relay exchange outbox"; !strings.Contains(section, want) {
		t.Errorf("W1 and W2 per sink lacks %q:\n%s", want, section)
	}
	if strings.Contains(section, "- NATS:") || strings.Contains(section, "- Redis:") {
		t.Errorf("W1 and W2 per sink describes a server the report's machine lacks:\n%s", section)
	}

	backlog := text[strings.Index(text, "### Backlog throughput"):]
	backlog = backlog[:strings.Index(backlog, "### W1 and W2 per sink")]
	if strings.Contains(backlog, "(nats)") || strings.Contains(backlog, "(rabbitmq)") || strings.Contains(backlog, "(redis)") || strings.Contains(backlog, "| 50000 |") {
		t.Errorf("Kafka's backlog table holds runs of other sinks:\n%s", backlog)
	}
	for _, w := range []string{"| W1 (nats) | 1 | 50000 |", "| W1 (rabbitmq) | 1 | 50000 |", "| W1 (redis) | 1 | 50000 |", "| W2 (nats) | 1 | 500000 |"} {
		if !strings.Contains(text, w) {
			t.Errorf("every-run table lacks %q:\n%s", w, text)
		}
	}
}

// TestPerSinkTextKafkaOnly checks that the per-sink table is left out
// when only Kafka ran.
func TestPerSinkTextKafkaOnly(t *testing.T) {
	r := report{
		opts:    options{sinks: []string{"kafka"}, sinkScale: 0.25, scale: 1, runs: 1},
		results: []result{{workload: "W1", base: "W1", run: 1, rows: 10, relay: 1, ack: 1, consumer: 1, drains: []drain{{seconds: 1}}, brokerCPU: -1}},
	}
	if text := r.text(); strings.Contains(text, "per sink") {
		t.Errorf("report of Kafka alone has a per-sink section:\n%s", text)
	}
}

// TestRelayEnv checks that the relay runs through w's sink, its broker's
// address in the sink's variable, whatever --relay-env says.
func TestRelayEnv(t *testing.T) {
	b := &bench{o: options{relayEnv: []string{"OUTBOX_RELAY_SINK=redis", "OUTBOX_RELAY_KAFKA_LINGER=1ms"}}}
	w1, _ := lookupWorkload("W1")
	for _, tc := range []struct {
		w    workload
		want map[string]string // the last value of each variable; "" for none
	}{
		{w: w1, want: map[string]string{"OUTBOX_RELAY_SINK": "kafka", "OUTBOX_RELAY_KAFKA_BROKERS": "addr", "OUTBOX_RELAY_NATS_URL": "", "OUTBOX_RELAY_KAFKA_LINGER": "1ms"}},
		{w: w1.onSink(sinkNATS), want: map[string]string{"OUTBOX_RELAY_SINK": "nats", "OUTBOX_RELAY_KAFKA_BROKERS": "", "OUTBOX_RELAY_NATS_URL": "addr"}},
		{w: w1.onSink(sinkRedis), want: map[string]string{"OUTBOX_RELAY_SINK": "redis", "OUTBOX_RELAY_REDIS_URL": "addr", "OUTBOX_RELAY_NATS_URL": ""}},
		{w: w1.onSink(sinkRabbitMQ), want: map[string]string{"OUTBOX_RELAY_SINK": "rabbitmq", "OUTBOX_RELAY_RABBITMQ_URL": "addr", "OUTBOX_RELAY_REDIS_URL": "", "OUTBOX_RELAY_KAFKA_BROKERS": ""}},
	} {
		t.Run(tc.w.title(), func(t *testing.T) {
			got := map[string]string{}
			for _, kv := range b.relayEnv(tc.w, "postgres://x", "addr", "", "") {
				k, v, _ := strings.Cut(kv, "=")
				got[k] = v
			}
			for k, want := range tc.want {
				if got[k] != want {
					t.Errorf("%s = %q, want %q", k, got[k], want)
				}
			}
		})
	}
}
