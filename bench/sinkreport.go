package main

import (
	"fmt"
	"slices"
	"strings"
)

// The per-sink part of the report: W1 and W2 through each sink --sinks
// names, beside Kafka's W1 and W2 of the same benchmark.

// title names r's workload as workload.title does: W2, or W2 (nats).
func (r result) title() string {
	if r.sink == "" {
		return r.workload
	}
	return r.workload + " (" + r.sink + ")"
}

// sinkName is the relay's --sink of r.
func (r result) sinkName() string {
	if r.sink == "" {
		return sinkKafka
	}
	return r.sink
}

// ackRowsPerSec is the rows over the time from the relay's start to the
// broker's acknowledgement of the last row.
func (r result) ackRowsPerSec() float64 { return pos(r.ack, float64(r.rows)/r.ack) }

// sinkRow is one row of the per-sink table: a workload through a sink.
type sinkRow struct{ workload, sink string }

// perSinkRows groups the backlog runs of W1 and W2, at least once, by
// workload and sink, in the order W1 then W2, each by sinkNames' order.
func perSinkRows(results []result) ([]sinkRow, map[sinkRow][]result) {
	by := map[sinkRow][]result{}
	for _, res := range results {
		if res.exactlyOnce || res.hist != nil || (res.base != "W1" && res.base != "W2") {
			continue
		}
		k := sinkRow{res.workload, res.sinkName()}
		by[k] = append(by[k], res)
	}
	var rows []sinkRow
	for _, w := range []string{"W1", "W2"} {
		for _, sink := range sinkNames {
			if k := (sinkRow{w, sink}); len(by[k]) > 0 {
				rows = append(rows, k)
			}
		}
	}
	return rows, by
}

// perSinkText writes the table of W1 and W2 per sink; nothing when only
// Kafka ran.
func (r report) perSinkText(b *strings.Builder) {
	rows, by := perSinkRows(r.results)
	if !slices.ContainsFunc(rows, func(k sinkRow) bool { return k.sink != sinkKafka }) {
		return
	}
	fmt.Fprintf(b, "\n### W1 and W2 per sink\n\n")
	b.WriteString("The same backlogs through the relay run with `--sink=nats`, `--sink=rabbitmq` or `--sink=redis` (its defaults otherwise, at least once), the broker in a process of its own, fresh for every run, and a consumer in the benchmark counting the rows with the broker's own client, beside Kafka's W1 and W2 runs above. ")
	fmt.Fprintf(b, "Their row counts are multiplied by --sink-scale (%g) when it is smaller than --scale: loading a backlog, not timed, takes most of a run's time (W1's single-row commits with fsync on most of all), and each sink adds two workloads × --runs runs. ", r.opts.sinkScale)
	b.WriteString("Each run has its own pg_recvlogical drains (the faster of one before the relay and one after) of copies of its own slot, so each ratio compares figures of one run; compare sinks by the ratios rather than by rows/s when their row counts differ. \"to ack\" stops the clock when the relay's published count, read every 50 ms, reaches the rows (the broker acknowledged the last one), so with few rows it may come after \"to consumer\", which stops it when the consumer had every row.\n\n")
	if r.machine.NATS != "" {
		fmt.Fprintf(b, "- NATS: %s; relay subjects outbox.bench.{aggregate_id} in the stream %s made by `outbox-relay setup`; consumer: nats.go, an ordered JetStream consumer of the stream filtered to outbox.bench.>, no acknowledgements\n", r.machine.NATS, natsStream)
	}
	if r.machine.RabbitMQ != "" {
		fmt.Fprintf(b, "- RabbitMQ: %s; relay exchange %s (topic, made by `outbox-relay setup`), routing key bench.created; a durable classic queue %s bound to it with # before the relay starts; consumer: amqp091-go, prefetch %d, acknowledging %d at a time (multiple) or what it holds after %s without a message\n",
			r.machine.RabbitMQ, rabbitmqExchange, rabbitmqQueue, rabbitmqPrefetch, rabbitmqAckEvery, consumerFetchMaxWait)
	}
	if r.machine.Redis != "" {
		fmt.Fprintf(b, "- Redis: %s; relay stream key outbox.bench; consumer: go-redis, XREAD COUNT %d BLOCK %s from the stream's start\n", r.machine.Redis, redisReadCount, consumerFetchMaxWait)
	}
	if r.machine.NATS != "" || r.machine.RabbitMQ != "" || r.machine.Redis != "" {
		b.WriteString("\n")
	}
	b.WriteString("| workload | sink | rows | to ack rows/s | to consumer rows/s | pg_recvlogical rows/s | to ack ÷ pg_recvlogical | to consumer ÷ pg_recvlogical | relay CPU µs/row | relay peak RSS MB | broker CPU µs/row |\n")
	b.WriteString("|---|---|" + strings.Repeat("---:|", 9) + "\n")
	for _, k := range rows {
		rs := by[k]
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", k.workload, k.sink, rowCounts(rs),
			stat(rs, "%.0f", result.ackRowsPerSec),
			stat(rs, "%.0f", result.consumerRowsPerSec),
			stat(rs, "%.0f", func(r result) float64 { c := r.ceiling().seconds; return pos(c, float64(r.rows)/c) }),
			stat(rs, "%.2f", result.ackRatio),
			stat(rs, "%.2f", result.consumerRatio),
			stat(rs, "%.2f", result.cpuPerRow),
			stat(rs, "%.1f", func(r result) float64 { return float64(r.relayRSS) / 1e6 }),
			stat(rs, "%.2f", result.brokerCPUPerRow))
	}
}

// rowCounts gives the rows of rs's runs: one number when they agree.
func rowCounts(rs []result) string {
	var ns []string
	for _, r := range rs {
		n := fmt.Sprint(r.rows)
		if !slices.Contains(ns, n) {
			ns = append(ns, n)
		}
	}
	return strings.Join(ns, ", ")
}
