// Command bench measures the outbox-relay binary end to end: rows per
// second from a PostgreSQL backlog to Kafka acknowledgements and to a
// consumer, beside pg_recvlogical draining the same backlog (the ceiling
// PostgreSQL's logical decoding sets), CPU per row and peak memory of the
// relay process, per-stage latency, and commit-to-consumer latency under a
// steady load.
//
// It runs against the PostgreSQL server --pg-dsn names (a superuser, or a
// role that may create databases and replication slots, on a server with
// wal_level=logical), or without it a private one it starts and removes
// (cdc/pgtest) with fsync=on (--pg-fsync=false turns it off) and
// synchronous_commit=on; and against the Kafka brokers --brokers names, or
// without it the kfake broker of bench/broker, started in a process of its
// own for every run so that its CPU and memory are apart from the relay's.
// Each run uses a fresh database, slot and broker.
//
// Workloads (--workloads), row counts multiplied by --scale:
//
//	W1  200,000 transactions of 1 row, payload ~200 bytes, 1,000 aggregates
//	W2  2,000,000 rows in transactions of 100 rows
//	W3  5,000 single-row autocommit inserts per second from 8 writers
//	    (--w3-writers) for 60 s with the relay running: commit-to-consumer
//	    latency and lag
//	W4  100,000 rows of 8 KB incompressible payloads (TOASTed), 10 per transaction
//
// Each with the suffix -EO (W2-EO, W3-EO) is the same workload through a
// relay run with OUTBOX_RELAY_DELIVERY=exactly-once (Kafka transactions of
// whole PostgreSQL transactions, committed every
// --kafka-transaction-interval with a fence); the others run with
// at-least-once. The default is W1,W2,W2-EO,W3,W3-EO,W4. A workload and
// its -EO variant take turns, run by run, so that a shared machine's load
// falls on both alike, and the report gives the ratio of the two run by
// run.
//
// --sinks (default kafka,nats,rabbitmq,redis) runs W1 and W2, when
// --workloads names them, through the other sinks as well: the relay run
// with --sink=nats, --sink=rabbitmq or --sink=redis and its defaults
// otherwise (at least once); the NATS server of bench/broker --kind nats
// (JetStream, file storage), a RabbitMQ node (the installed
// rabbitmq-server with an epmd of its own, as
// sinks/rabbitmq/rabbitmqtest starts it; 4 to 10 seconds to start, not
// timed) or redis-server (appendonly yes, appendfsync always, as
// sinks/redis/redistest starts it) in processes of its own, fresh for every
// run, once `outbox-relay setup` with the sink has made what it needs
// there (NATS: the stream; RabbitMQ: the exchange outbox, to which the
// benchmark then binds a durable classic queue with # before the relay
// starts, since RabbitMQ drops what reaches no queue); and a consumer here
// counting the rows with the broker's own client (nats.go, an ordered
// JetStream consumer; amqp091-go, prefetch 2,000, acknowledging 500 at a
// time; go-redis, XREAD BLOCK 10 ms), so that the "to consumer" rates
// exist too. Those runs take turns with Kafka's, run by run, each with a
// pg_recvlogical drain of its own for the ratios but no SQL decoding
// (Kafka's runs measure that). W3, W4 and the -EO workloads stay Kafka's
// alone; leaving kafka out of --sinks runs only the other sinks' W1 and
// W2. Their row counts are multiplied by --sink-scale (default 0.25)
// instead of --scale when it is smaller: loading a backlog, which is not
// timed, takes most of a backlog run (W1's 200,000 single-row commits with
// fsync on take about 45 s), and NATS and Redis drain W2 at a third to a
// half of Kafka's rate here, RabbitMQ at about 9,000 rows/s (its node
// takes about 95 µs of CPU per persistent, confirmed message on this
// 2-core machine), so three more sinks at full scale would add about half
// an hour to make bench, and at 0.25 about 10 minutes, while W1's 50,000
// rows and W2's 500,000 still keep the relay draining for a second or
// more.
// redis-server and rabbitmq-server must be installed (Debian's
// redis-server and rabbitmq-server packages) unless --sinks leaves them
// out; the benchmark checks before its first run. The report's table "W1
// and W2 per sink" shows these runs beside Kafka's W1 and W2: rows/s to
// the broker's acknowledgement and to the consumer, their ratios to
// pg_recvlogical, the relay's CPU per row and peak RSS, and the broker's
// CPU per row from the relay's start (a RabbitMQ node spends seconds of
// CPU starting).
//
// W1, W2 and W4 insert the backlog with the relay stopped (not timed), copy
// the slot twice and time pg_recvlogical draining one copy before the relay
// and the other after it, the faster drain being the ceiling (a drain
// slowed by the machine would flatter the relay), and
// pg_logical_slot_peek_binary_changes decoding another in SQL, then time
// the relay from its start until Kafka acknowledged the last row and the
// slot's confirmed_flush_lsn reached the WAL position after the backlog.
// Meanwhile a consumer here (read_committed, fetch max wait 10 ms) counts
// the relay's records, and the run ends only once it has every row as
// well: the "to consumer" rate (--consume=false leaves it out). W3 writes
// with the relay running and, with --w3-consume (the default), measures
// every row from its commit to the same kind of consumer; the relay's
// end-to-end histogram gives commit to acknowledgement. Every workload
// reports the quantiles of the relay's outbox_relay_stage_latency_seconds
// histogram by stage (send, receive, publish, acknowledge), n/a if the relay does
// not export it, and the relay's and the broker's CPU time per row.
//
// The report checks the targets of the performance issue: W4 ≥ 0.8 ×
// pg_recvlogical with a peak RSS ≤ 64 MB, W2 ≥ 1.2 × with the consumer in
// the loop, W1 ≥ 1.5 ×, W2 relay CPU ≤ 1.5 µs per row, W3 (8 writers,
// fsync on, consumer in the loop) commit-to-consumer p99 ≤ 5 ms and p999
// ≤ 20 ms; and those of issue 10 for exactly-once: W2-EO drains at least
// 0.8 times as fast as W2, and W3-EO's p99 commit-to-consumer latency is
// at most the transaction interval + 10 ms.
//
// The relay runs with its defaults and OUTBOX_RELAY_LOG_LEVEL=warn;
// --relay-env measures another setting. --profile DIR adds a run of
// --profile-workload with the relay's /debug/pprof on (--pprof-addr), saving a 20 s CPU
// profile and the allocation profile, with go tool pprof -top of each.
// --markdown FILE rewrites FILE below its results marker.
//
//	go run ./bench --relay bin/outbox-relay --scale 0.05 --runs 1
//	make bench    # full scale, 3 runs, results in BENCHMARKS.md
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// options are the command's flags.
type options struct {
	pgDSN         string
	pgBinDir      string
	brokers       string
	brokerBin     string
	partitions    int
	relayBin      string
	workloads     []string
	scale         float64
	runs          int
	insertClients int
	w3Rate        float64
	w3Duration    time.Duration
	w3Writers     int
	w3Consume     bool
	consume       bool // a consumer counts the backlog workloads' records
	pgFsync       bool // fsync of the private PostgreSQL
	w3Trace       string
	markdown      string
	profileDir    string
	profileW      string
	runTimeout    time.Duration
	relayEnv      []string
	sinks         []string // --sinks: kafka runs every workload, the others W1 and W2
	sinkScale     float64  // --sink-scale: the other sinks' scale, when smaller than scale
	autogroupOff  bool     // --sched-autogroup=off
	// txnInterval is the relay's --kafka-transaction-interval: its
	// default, or OUTBOX_RELAY_KAFKA_TRANSACTION_INTERVAL of --relay-env.
	txnInterval time.Duration
}

// defaultSinkScale is --sink-scale's default; see the command's doc.
const defaultSinkScale = 0.25

// defaultTxnInterval is the relay's default --kafka-transaction-interval.
const defaultTxnInterval = 100 * time.Millisecond

// envTxnInterval is the relay's setting of the transaction interval.
const envTxnInterval = "OUTBOX_RELAY_KAFKA_TRANSACTION_INTERVAL"

func parseFlags(args []string) (options, error) {
	o := options{autogroupOff: true}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&o.pgDSN, "pg-dsn", "", "PostgreSQL server to benchmark against (a role that may create databases and slots); empty starts a private one")
	fs.BoolVar(&o.pgFsync, "pg-fsync", true, "fsync of the private PostgreSQL (synchronous_commit stays on); false measures without the WAL flush to disk. Ignored with --pg-dsn")
	fs.StringVar(&o.pgBinDir, "pg-bindir", "", "directory holding pg_recvlogical; empty means the newest /usr/lib/postgresql/*/bin, else PATH")
	fs.StringVar(&o.brokers, "brokers", "", "Kafka bootstrap brokers, comma-separated; empty starts bench/broker (kfake) in its own process for every run")
	fs.StringVar(&o.brokerBin, "broker-bin", "", "built bench/broker program; empty builds it")
	fs.IntVar(&o.partitions, "partitions", 10, "partitions of the topic when the broker is started here")
	fs.StringVar(&o.relayBin, "relay", "bin/outbox-relay", "outbox-relay binary to measure")
	workloads := fs.String("workloads", "W1,W2,W2-EO,W3,W3-EO,W4", "workloads to run, comma-separated: W1 to W4, each also with -EO for exactly-once delivery")
	fs.Float64Var(&o.scale, "scale", 1, "multiplies row counts (and W3's duration); 0.05 makes a quick run")
	fs.IntVar(&o.runs, "runs", 3, "runs of each workload; the table shows medians")
	fs.IntVar(&o.insertClients, "insert-clients", 2, "connections inserting the backlog in parallel")
	fs.Float64Var(&o.w3Rate, "w3-rate", 5000, "W3: transactions per second")
	fs.DurationVar(&o.w3Duration, "w3-duration", time.Minute, "W3: duration at full scale (multiplied by --scale, at least 5s)")
	fs.IntVar(&o.w3Writers, "w3-writers", 8, "W3: connections writing")
	fs.BoolVar(&o.w3Consume, "w3-consume", true, "W3: also consume the records (read_committed, fetch max wait 10ms) and measure commit to consumer receipt")
	fs.BoolVar(&o.consume, "consume", true, "W1, W2, W4: a consumer (read_committed, fetch max wait 10ms) counts the relay's records while it drains, and the run ends when it has every row")
	fs.StringVar(&o.w3Trace, "w3-trace", "", "W3: write each measured row's commit time and consumer latency to this CSV file (the last run's)")
	fs.StringVar(&o.markdown, "markdown", "", "write the results into this Markdown file, keeping its text above the results marker")
	fs.StringVar(&o.profileDir, "profile", "", "after the runs, run a backlog workload once more with --pprof-addr and save CPU (20s) and allocation profiles in this directory")
	fs.StringVar(&o.profileW, "profile-workload", "W2", "workload of the --profile run: W1, W2 or W4, or one of them with -EO")
	sinks := fs.String("sinks", strings.Join(sinkNames, ","), "brokers to run through, comma-separated: kafka runs every workload of --workloads, nats, rabbitmq and redis their W1 and W2")
	fs.Float64Var(&o.sinkScale, "sink-scale", defaultSinkScale, "multiplies the row counts of W1 and W2 through nats, rabbitmq and redis, instead of --scale when smaller")
	fs.Func("sched-autogroup", "off turns Linux's autogroup scheduling off for the benchmark and on again after it (as root; see bench/autogroup.go), keep leaves it as it is", func(v string) error {
		switch v {
		case "off", "keep":
			o.autogroupOff = v == "off"
			return nil
		}
		return fmt.Errorf("want off or keep, not %q", v)
	})
	fs.DurationVar(&o.runTimeout, "run-timeout", 15*time.Minute, "longest one run may take")
	fs.Func("relay-env", "OUTBOX_RELAY_NAME=value for the relay, to measure a setting other than its default; repeatable", func(kv string) error {
		if !strings.HasPrefix(kv, "OUTBOX_RELAY_") || !strings.Contains(kv, "=") {
			return fmt.Errorf("want OUTBOX_RELAY_NAME=value, not %q", kv)
		}
		o.relayEnv = append(o.relayEnv, kv)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.profileW = strings.ToUpper(o.profileW)
	for _, w := range strings.Split(*workloads, ",") {
		w = strings.ToUpper(strings.TrimSpace(w))
		if w == "" {
			continue
		}
		if _, ok := lookupWorkload(w); !ok {
			return o, fmt.Errorf("--workloads: unknown workload %q; use W1, W2, W3 or W4, each also with -EO (W2-EO)", w)
		}
		if slices.Contains(o.workloads, w) {
			return o, fmt.Errorf("--workloads names %s twice", w)
		}
		o.workloads = append(o.workloads, w)
	}
	for _, sink := range strings.Split(*sinks, ",") {
		sink = strings.ToLower(strings.TrimSpace(sink))
		if sink == "" {
			continue
		}
		if !slices.Contains(sinkNames, sink) {
			return o, fmt.Errorf("--sinks: unknown sink %q; use %s", sink, strings.Join(sinkNames, ", "))
		}
		if slices.Contains(o.sinks, sink) {
			return o, fmt.Errorf("--sinks names %s twice", sink)
		}
		o.sinks = append(o.sinks, sink)
	}
	o.txnInterval = defaultTxnInterval
	for _, kv := range o.relayEnv {
		if v, ok := strings.CutPrefix(kv, envTxnInterval+"="); ok {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return o, fmt.Errorf("--relay-env %s: want a positive duration such as 50ms", kv)
			}
			o.txnInterval = d
		}
	}
	pw, ok := lookupWorkload(o.profileW)
	switch {
	case len(o.workloads) == 0:
		return o, errors.New("--workloads names none; use W1, W2, W3 or W4, each also with -EO (W2-EO)")
	case o.scale <= 0:
		return o, fmt.Errorf("--scale is %g; use a positive number", o.scale)
	case o.runs < 1:
		return o, fmt.Errorf("--runs is %d; use 1 or more", o.runs)
	case o.insertClients < 1 || o.w3Writers < 1:
		return o, errors.New("--insert-clients and --w3-writers must be 1 or more")
	case !ok || pw.latency:
		return o, fmt.Errorf("--profile-workload is %q; use W1, W2 or W4, or one of them with -EO", o.profileW)
	case o.w3Rate <= 0:
		return o, fmt.Errorf("--w3-rate is %g; use a positive number", o.w3Rate)
	case o.sinkScale <= 0:
		return o, fmt.Errorf("--sink-scale is %g; use a positive number", o.sinkScale)
	case len(o.sinks) == 0:
		return o, fmt.Errorf("--sinks names none; use %s", strings.Join(sinkNames, ", "))
	}
	n := 0
	for _, group := range turns(o.workloads) {
		n += len(schedule(group, o))
	}
	if n == 0 {
		return o, fmt.Errorf("nothing to run: --sinks %s runs only W1 and W2 of --workloads; add kafka to --sinks or W1 or W2 to --workloads", strings.Join(o.sinks, ","))
	}
	return o, nil
}

func run(args []string) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	relayBin, err := filepath.Abs(o.relayBin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(relayBin); err != nil {
		return fmt.Errorf("relay binary: %w; build it with make build or pass --relay", err)
	}
	tmp, err := os.MkdirTemp("", "outbox-relay-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	b := &bench{o: o, relayBin: relayBin, tmp: tmp, started: time.Now()}
	restore, err := setAutogroup(o.autogroupOff, b.logf)
	if err != nil {
		return err
	}
	defer restore()
	if o.brokers == "" || slices.Contains(o.sinks, sinkNATS) {
		if b.brokerBin, err = brokerBinary(ctx, o.brokerBin, tmp); err != nil {
			return err
		}
	}
	b.logf("starting PostgreSQL")
	srv, err := openServer(ctx, o.pgDSN, o.pgBinDir, o.pgFsync)
	if err != nil {
		return err
	}
	defer srv.close()
	b.srv = srv
	if b.machine, err = describeMachine(ctx, srv, relayBin); err != nil {
		return err
	}
	if err := describeSinks(ctx, o.sinks, b.brokerBin, &b.machine); err != nil {
		return err
	}
	b.logf("%s; PostgreSQL %s; relay %s", b.machine.CPU, b.machine.PostgreSQL, b.machine.Relay)

	var results []result
	for _, group := range turns(o.workloads) {
		for i := 1; i <= o.runs; i++ {
			for _, w := range schedule(group, o) {
				r, err := b.runOnce(ctx, w, i, nil)
				if err != nil {
					return fmt.Errorf("%s run %d: %w", w.title(), i, err)
				}
				b.logf("%s run %d: %s", w.title(), i, r.oneLine())
				results = append(results, r)
			}
		}
	}
	var prof *profileRun
	if o.profileDir != "" {
		if prof, err = b.profile(ctx); err != nil {
			return fmt.Errorf("profile run: %w", err)
		}
	}

	rep := report{machine: b.machine, opts: o, results: results, profile: prof, took: time.Since(b.started)}
	fmt.Println()
	fmt.Print(rep.text())
	if o.markdown != "" {
		if err := rep.writeMarkdown(o.markdown); err != nil {
			return err
		}
		b.logf("results written to %s", o.markdown)
	}
	return nil
}

// turns groups names, in order of first appearance, by their at-least-once
// workload: W1,W2,W3-EO,W2-EO,W3 gives [W1] [W2 W2-EO] [W3-EO W3]. The
// workloads of a group take turns, run by run.
func turns(names []string) [][]string {
	var groups [][]string
	at := map[string]int{}
	for _, name := range names {
		w, _ := lookupWorkload(name)
		i, ok := at[w.base]
		if !ok {
			i = len(groups)
			at[w.base] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], name)
	}
	return groups
}

// schedule returns the runs of one run number of a group of workloads from
// turns, scaled, in order: each workload through Kafka, if --sinks names
// it, then, for W1 and W2, through each other sink --sinks names, so that
// a shared machine's load falls on the sinks alike.
func schedule(group []string, o options) []workload {
	var ws []workload
	for _, name := range group {
		w, _ := lookupWorkload(name)
		if slices.Contains(o.sinks, sinkKafka) {
			ws = append(ws, w.scaled(o))
		}
		if !w.perSink() {
			continue
		}
		for _, sink := range o.sinks {
			if sink != sinkKafka {
				ws = append(ws, w.onSink(sink).scaled(o))
			}
		}
	}
	return ws
}

// bench holds what every run shares.
type bench struct {
	o         options
	srv       *server
	relayBin  string
	brokerBin string
	tmp       string
	machine   machine
	started   time.Time
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Since(b.started).Truncate(time.Second), fmt.Sprintf(format, args...))
}
