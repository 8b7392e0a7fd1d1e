package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// result is one run of one workload. Durations are seconds; a negative
// figure was not measured.
type result struct {
	workload    string
	base        string // the at-least-once workload: W2 for W2-EO
	exactlyOnce bool
	sink        string // the relay's --sink for W1 and W2 through another broker than Kafka; empty for Kafka
	run         int
	rows        int64
	bytes       int64 // payload bytes: the Kafka record values

	insert    float64 // loading the backlog, relay stopped
	relay     float64 // relay start to the slot confirmed past the backlog
	ack       float64 // relay start to Kafka's acknowledgement of the last row
	consumer  float64 // relay start to the consumer here counting every row; -1 if not measured (--consume=false)
	drains    []drain // pg_recvlogical draining copies of the slot, before and after the relay
	relayCPU  float64 // CPU seconds of the relay process
	relayRSS  int64   // peak resident set of the relay process, bytes
	brokerCPU float64 // CPU seconds of the broker process from the relay's start; -1 for external brokers
	benchCPU  float64 // CPU seconds of this program while the relay drained (its consumer); -1 if not measured
	senderCPU float64 // CPU seconds of the walsender feeding the relay; -1 if unknown
	decode    float64 // pg_logical_slot_peek_binary_changes decoding a copy of the slot in SQL
	published float64 // the relay's outbox_relay_events_published_total at the end
	busy      float64 // share of the machine's CPU busy while the relay was timed; -1 if unknown

	// stages is the relay's per-stage latency: over the whole drain for a
	// backlog, over the measured rows for W3; nil if the relay does not
	// export it.
	stages stageLatency

	// Exactly-once only: the relay's Kafka transactions (for W3, over the
	// measured rows).
	txns txnStats

	// W3 only.
	rate     float64                    // transactions per second achieved by the writers
	hist     map[float64]bucketQuantile // commit to acknowledgement
	produce  map[float64]bucketQuantile // produce call to acknowledgement
	consumed map[float64]float64        // quantile -> seconds, commit return to consumer receipt; nil if not measured
	consumeN int64                      // rows the consumer received
	lagP50   float64                    // bytes
	lagMax   float64
	buckets  []float64 // the latency histogram's bounds
	cores    cores     // CPU used while the measured rows were written
	// One-second windows of commits (consumer-measured), and those whose
	// p99 was at most goodLimit seconds.
	seconds, goodSeconds int
	goodLimit            float64
}

// txnStats are the exactly-once relay's Kafka transactions, from its
// outbox_relay_kafka_transaction* series.
type txnStats struct {
	committed, aborted float64
	rows               int64                      // rows they held: the backlog, or W3's measured rows
	seconds            float64                    // the time they took: the relay's to confirm, or W3's writing
	commit             map[float64]bucketQuantile // CommitTxn duration: flush, fence, EndTxn
}

// readTxnStats returns the transactions between two scrapes; a zero before
// means since the start.
func readTxnStats(before, after scrape) txnStats {
	t := txnStats{
		committed: after.sums[metricTxnCommitted] - before.sums[metricTxnCommitted],
		aborted:   after.sums[metricTxnAborted] - before.sums[metricTxnAborted],
		commit:    map[float64]bucketQuantile{},
	}
	h := after.histogramOf(metricTxnCommit).minus(before.histogramOf(metricTxnCommit))
	for _, q := range quantiles {
		if v, ok := h.quantile(q); ok {
			t.commit[q] = v
		}
	}
	return t
}

func (r result) oneLine() string {
	if r.hist != nil {
		s := fmt.Sprintf("%.0f tx/s; relay histogram p50 %s p99 %s p999 %s", r.rate,
			fmtBucket(r.hist[0.5]), fmtBucket(r.hist[0.99]), fmtBucket(r.hist[0.999]))
		if r.consumed != nil {
			s += fmt.Sprintf("; consumer (read_committed) p50 %s p99 %s p999 %s, p99 ≤ %s in %d of %d seconds", ms(r.consumed[0.5]), ms(r.consumed[0.99]), ms(r.consumed[0.999]), ms(r.goodLimit), r.goodSeconds, r.seconds)
		}
		s += fmt.Sprintf("; produce to ack p50 %s p99 %s", fmtBucket(r.produce[0.5]), fmtBucket(r.produce[0.99]))
		return s + r.stagesLine(quantiles) + fmt.Sprintf("; lag p50 %.0f B max %.0f B; relay CPU %.2f µs/row; RSS %.1f MB; machine %.0f%% busy; cores: relay %.2f broker %.2f PostgreSQL %.2f bench %.2f",
			r.lagP50, r.lagMax, r.cpuPerRow(), float64(r.relayRSS)/1e6, r.busy*100, r.cores.relay, r.cores.broker, r.cores.postgres, r.cores.bench) + r.txnLine()
	}
	s := fmt.Sprintf("%d rows inserted in %.1fs; relay %.2fs (%.0f rows/s, acked at %.2fs", r.rows, r.insert, r.relay, r.rowsPerSec(), r.ack)
	if r.consumer > 0 {
		s += fmt.Sprintf(", to consumer %.2fs, %.0f rows/s", r.consumer, r.consumerRowsPerSec())
	}
	s += ")"
	ceil := r.ceiling()
	if ceil.seconds > 0 {
		s += fmt.Sprintf(", pg_recvlogical %.2fs (%.0f rows/s), ratio %.2f", ceil.seconds, float64(r.rows)/ceil.seconds, r.ratio())
		if r.consumer > 0 {
			s += fmt.Sprintf(", to consumer %.2f", r.consumerRatio())
		}
	}
	s += r.stagesLine([]float64{0.5, 0.99})
	s += fmt.Sprintf("; relay CPU %.2f µs/row; RSS %.1f MB; machine %.0f%% busy", r.cpuPerRow(), float64(r.relayRSS)/1e6, r.busy*100)
	if ceil.busy >= 0 {
		s += fmt.Sprintf(" (%.0f%% under pg_recvlogical)", ceil.busy*100)
	}
	return s + r.txnLine()
}

// txnLine describes an exactly-once run's Kafka transactions; empty for
// at-least-once.
func (r result) txnLine() string {
	if !r.exactlyOnce {
		return ""
	}
	return fmt.Sprintf("; %.0f Kafka transactions committed, %.0f aborted, commit p50 %s p99 %s",
		r.txns.committed, r.txns.aborted, fmtBucket(r.txns.commit[0.5]), fmtBucket(r.txns.commit[0.99]))
}

// stagesLine gives the quantiles qs of each stage in ms; empty if the
// relay does not export them.
func (r result) stagesLine(qs []float64) string {
	if r.stages == nil {
		return ""
	}
	var parts []string
	for _, st := range stages {
		var vs []string
		for _, q := range qs {
			if v, ok := r.stages[st][q]; ok {
				vs = append(vs, "p"+qName(q)+" "+ms(v.value))
			}
		}
		parts = append(parts, st+" "+strings.Join(vs, " "))
	}
	return "; stages: " + strings.Join(parts, ", ")
}

func (r result) rowsPerSec() float64         { return float64(r.rows) / r.relay }
func (r result) mbPerSec() float64           { return float64(r.bytes) / r.relay / 1e6 }
func (r result) ratio() float64              { return r.ratioTo(r.relay) }
func (r result) ackRatio() float64           { return r.ratioTo(r.ack) }
func (r result) consumerRowsPerSec() float64 { return pos(r.consumer, float64(r.rows)/r.consumer) }
func (r result) consumerRatio() float64      { return r.ratioTo(r.consumer) }

// ratioTo is the ceiling's seconds over the relay's seconds; -1 when
// either is not measured.
func (r result) ratioTo(seconds float64) float64 {
	ceil := r.ceiling().seconds
	if ceil <= 0 || seconds <= 0 {
		return -1
	}
	return ceil / seconds
}

// freeRelayRatio is the highest ratio to pg_recvlogical the run's machine
// allowed a relay that spent no CPU at all: the walsender, the broker and
// this program (the consumer) still spend what they spent in the run, the
// walsender on one core and all three on the machine's cores, so the drain
// takes at least the longer of the two. It leaves out other processes and
// assumes their CPU does not depend on the relay's; -1 when one of the
// three was not measured.
func (r result) freeRelayRatio(cores int) float64 {
	ceil := r.ceiling().seconds
	if ceil <= 0 || r.senderCPU < 0 || r.brokerCPU < 0 || r.benchCPU < 0 || cores < 1 {
		return -1
	}
	least := max(r.senderCPU, (r.senderCPU+r.brokerCPU+r.benchCPU)/float64(cores))
	if least <= 0 {
		return -1
	}
	return ceil / least
}

// cpuPerRow is the relay's CPU time, start-up included, over the rows of
// the run, in µs.
func (r result) cpuPerRow() float64 { return r.relayCPU / float64(r.rows) * 1e6 }

// brokerCPUPerRow is cpuPerRow of the broker; -1 for external brokers.
func (r result) brokerCPUPerRow() float64 {
	if r.brokerCPU < 0 {
		return -1
	}
	return r.brokerCPU / float64(r.rows) * 1e6
}

// newResult is a result of w's run with nothing measured yet.
func (w workload) newResult(run int) result {
	return result{workload: w.name, base: w.base, exactlyOnce: w.exactlyOnce, sink: w.sink, run: run,
		consumer: -1, brokerCPU: -1, benchCPU: -1, senderCPU: -1, busy: -1, decode: -1}
}

// runOnce runs w once in a fresh database, with a fresh broker. prof, if
// set, makes it a profiling run.
func (b *bench) runOnce(ctx context.Context, w workload, run int, prof *profileRun) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, b.o.runTimeout)
	defer cancel()
	db := fmt.Sprintf("%s%s_%d", databasePrefix, w.ident(), run)
	if prof != nil {
		db = databasePrefix + "profile"
	}
	if err := b.srv.freshDatabase(ctx, db); err != nil {
		return result{}, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := b.srv.dropDatabase(dctx, db); err != nil {
			b.logf("drop database %s: %v", db, err)
		}
	}()
	// The database's part of the setup: with the Kafka sink, setup makes
	// nothing on a broker. Another sink's part (its streams) is made once
	// its broker runs, in backlogRun.
	dbOnly := w
	dbOnly.sink = ""
	if err := b.setup(ctx, dbOnly, b.srv.dsnFor(db), "localhost:9092"); err != nil {
		return result{}, err
	}
	if w.latency {
		return b.latencyRun(ctx, w, run, db)
	}
	return b.backlogRun(ctx, w, run, db, prof)
}

// setup runs outbox-relay setup for w, its broker at broker.
func (b *bench) setup(ctx context.Context, w workload, dsn, broker string) error {
	setup := exec.CommandContext(ctx, b.relayBin, "setup")
	setup.Env = b.relayEnv(w, dsn, broker, "", "")
	if out, err := setup.CombinedOutput(); err != nil {
		return fmt.Errorf("outbox-relay setup (--sink=%s): %w\n%s", w.sinkName(), err, out)
	}
	return nil
}

// relayEnv is the relay's environment for w: ours without OUTBOX_RELAY_*
// settings, so that it runs with its defaults, then --relay-env, then the
// benchmark's own, which win, among them OUTBOX_RELAY_DELIVERY of w's
// mode and OUTBOX_RELAY_SINK of w's sink with its broker's address,
// broker. A pprofAddr serves the relay's profiles; empty means none.
func (b *bench) relayEnv(w workload, dsn, broker, metricsAddr, pprofAddr string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OUTBOX_RELAY_") {
			env = append(env, kv)
		}
	}
	env = append(env, b.o.relayEnv...)
	env = append(env,
		"OUTBOX_RELAY_PG_DSN="+dsn,
		"OUTBOX_RELAY_SLOT="+slotName,
		"OUTBOX_RELAY_PUBLICATION="+publication,
		"OUTBOX_RELAY_METRICS_ADDR="+metricsAddr,
		"OUTBOX_RELAY_LOG_LEVEL=warn",
		"OUTBOX_RELAY_LOG_FORMAT=json",
		"OUTBOX_RELAY_DELIVERY="+w.delivery(),
	)
	env = append(env, sinkEnv(w.sinkName(), broker)...)
	if pprofAddr != "" {
		env = append(env, "OUTBOX_RELAY_PPROF_ADDR="+pprofAddr)
	}
	return env
}

// aggregateType is the rows' aggregate type, hence the topic
// outbox.{aggregate_type}. An external Kafka broker keeps what earlier runs
// wrote, so each run gets a topic of its own there.
func (b *bench) aggregateType(w workload, run int) string {
	if b.o.brokers == "" || w.sink != "" {
		return "bench"
	}
	return fmt.Sprintf("bench_%s_%s_%d", b.started.Format("20060102T150405"), w.ident(), run)
}

// backlogRun loads the backlog, measures pg_recvlogical on a copy of the
// slot, then the relay.
func (b *bench) backlogRun(ctx context.Context, w workload, run int, db string, prof *profileRun) (result, error) {
	r := w.newResult(run)
	b.logf("%s run %d: inserting %d rows, %d per transaction, %d connections", w.title(), run, w.rows, w.perTxn, b.o.insertClients)
	took, err := loadBacklog(ctx, b.srv, db, w, b.o.insertClients, b.aggregateType(w, run))
	if err != nil {
		return r, err
	}
	r.insert = took.Seconds()
	conn, err := b.srv.connect(ctx, db)
	if err != nil {
		return r, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// The backlog ends here: WAL written later (the checkpoint below, the
	// server's own records) is passed by the relay only once a keepalive
	// reports it, which takes a status interval more.
	var end string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end); err != nil {
		return r, err
	}
	if err := conn.QueryRow(ctx, `SELECT count(*), coalesce(sum(octet_length(payload::text)), 0) FROM outbox`).Scan(&r.rows, &r.bytes); err != nil {
		return r, fmt.Errorf("count the backlog: %w", err)
	}
	// Neither measurement below should meet a checkpoint of the backlog.
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		b.logf("CHECKPOINT: %v (going on)", err)
	}
	b.logf("%s run %d: %d rows (%.1f MB of payload) inserted in %.1fs; backlog ends at %s", w.title(), run, r.rows, float64(r.bytes)/1e6, r.insert, end)

	// pg_recvlogical drains two copies of the slot, both made at the
	// backlog's start: one before the relay, one after it.
	ceilingTwice := w.hasCeiling && prof == nil
	if ceilingTwice {
		dropBefore, err := b.copySlot(ctx, conn, ceilingSlot)
		if err != nil {
			return r, err
		}
		dropAfter, err := b.copySlot(ctx, conn, ceilingAfter)
		if err != nil {
			dropBefore()
			return r, err
		}
		defer dropAfter()
		d, err := b.drain(ctx, db, ceilingSlot, end)
		dropBefore()
		if err != nil {
			return r, err
		}
		r.drains = append(r.drains, d)
		b.logf("%s run %d: pg_recvlogical drained a copy in %.2fs (%.0f rows/s)", w.title(), run, d.seconds, float64(r.rows)/d.seconds)
		// SQL decoding does not depend on the sink: Kafka's runs measure it.
		if w.sink == "" {
			if err := b.decode(ctx, conn, end, &r); err != nil {
				return r, err
			}
			b.logf("%s run %d: pg_logical_slot_peek_binary_changes decoded a copy in %.2fs (%.0f rows/s)", w.title(), run, r.decode, float64(r.rows)/r.decode)
		}
	}

	broker, brokers, err := b.startBroker(ctx, w)
	if err != nil {
		return r, err
	}
	if broker != nil {
		defer broker.stop(10 * time.Second)
	}
	if w.sink != "" {
		// The sink's part of the setup (NATS: the streams; RabbitMQ: the
		// exchange), then the queue RabbitMQ's consumer reads, bound
		// before the relay starts; untimed.
		if err := b.setup(ctx, w, b.srv.dsnFor(db), brokers); err != nil {
			return r, err
		}
		if err := prepareSink(w.sink, brokers); err != nil {
			return r, fmt.Errorf("prepare %s for the consumer: %w", sinkTitle(w.sink), err)
		}
	}
	metricsAddr, err := freeAddr()
	if err != nil {
		return r, err
	}
	var pprofAddr string
	if prof != nil {
		if pprofAddr, err = freeAddr(); err != nil {
			return r, err
		}
	}
	// The consumer connects before the relay starts: the clock does not
	// count its start-up.
	var rec *receiver
	consuming, cctx := errgroup.WithContext(ctx)
	cctx, stopConsuming := context.WithCancel(cctx)
	defer stopConsuming()
	if b.o.consume {
		// Rows are numbered 1 to r.rows.
		if w.sink == "" {
			rec, err = newReceiver(brokers, "outbox."+b.aggregateType(w, run), r.rows+1)
		} else {
			rec, err = newSinkReceiver(ctx, w.sink, brokers, b.aggregateType(w, run), r.rows+1)
		}
		if err != nil {
			return r, err
		}
		consuming.Go(func() error { return rec.run(cctx) })
	}
	cmd := exec.Command(b.relayBin, "run")
	cmd.Env = b.relayEnv(w, b.srv.dsnFor(db), brokers, metricsAddr, pprofAddr)
	broker0 := brokerCPUBase(broker)
	bench0, benchErr := cpuSeconds(os.Getpid())
	began, machine := time.Now(), machineCPU()
	relay, err := start("relay", cmd)
	if err != nil {
		return r, err
	}
	defer relay.kill()
	var profiling errgroup.Group
	if prof != nil {
		profiling.Go(func() error { return prof.captureCPU(ctx, pprofAddr) })
	}
	f, err := b.awaitConfirmed(ctx, conn, relay, "http://"+metricsAddr+"/metrics", r.rows, end)
	if err != nil {
		return r, err
	}
	r.relay = f.confirm.Sub(began).Seconds()
	r.ack = f.ack.Sub(began).Seconds()
	r.busy = machine.busySince()
	if rec != nil {
		last, err := rec.awaitCount(ctx, relay, r.rows, 2*time.Minute)
		if err != nil {
			return r, err
		}
		r.consumer = last.Sub(began).Seconds()
		if s, err := cpuSeconds(os.Getpid()); err == nil && benchErr == nil {
			r.benchCPU = s - bench0
		}
	}
	stopConsuming()
	if err := consuming.Wait(); err != nil {
		return r, err
	}
	if err := profiling.Wait(); err != nil {
		return r, err
	}
	if prof != nil {
		if err := prof.captureAllocs(ctx, pprofAddr); err != nil {
			return r, err
		}
	}
	if err := b.measureProcesses(ctx, &r, relay, broker, broker0, f.senderPID, metricsAddr); err != nil {
		return r, err
	}
	r.txns.rows, r.txns.seconds = r.rows, r.relay
	if err := relay.stop(time.Minute); err != nil {
		b.logf("%v", err)
	}
	if ceilingTwice {
		d, err := b.drain(ctx, db, ceilingAfter, end)
		if err != nil {
			return r, err
		}
		r.drains = append(r.drains, d)
		b.logf("%s run %d: pg_recvlogical drained the other copy in %.2fs (%.0f rows/s) after the relay", w.title(), run, d.seconds, float64(r.rows)/d.seconds)
	}
	return r, nil
}

// brokerCPUBase returns the CPU seconds broker has used so far, to leave
// its start out of its CPU time: a RabbitMQ node spends seconds of CPU
// starting, the other brokers milliseconds. Zero if broker is nil or its
// time cannot be read.
func brokerCPUBase(broker brokerProc) float64 {
	if broker == nil {
		return 0
	}
	s, err := cpuSeconds(broker.pid())
	if err != nil {
		return 0
	}
	return s
}

// measureProcesses reads the CPU time and peak memory of the relay, the
// broker (less broker0, its CPU time when the relay started) and the
// walsender, and the relay's published count.
func (b *bench) measureProcesses(ctx context.Context, r *result, relay *process, broker brokerProc, broker0 float64, senderPID int, metricsAddr string) error {
	var err error
	if r.relayCPU, err = cpuSeconds(relay.pid()); err != nil {
		return fmt.Errorf("relay CPU: %w", err)
	}
	if r.relayRSS, err = peakRSS(relay.pid()); err != nil {
		return fmt.Errorf("relay RSS: %w", err)
	}
	if broker != nil {
		if r.brokerCPU, err = cpuSeconds(broker.pid()); err != nil {
			return fmt.Errorf("broker CPU: %w", err)
		}
		r.brokerCPU -= broker0
	}
	if senderPID != 0 && b.srv.local() {
		if s, err := cpuSeconds(senderPID); err == nil {
			r.senderCPU = s
		}
	}
	m, err := scrapeMetrics(ctx, "http://"+metricsAddr+"/metrics")
	if err != nil {
		return fmt.Errorf("read the relay's metrics: %w", err)
	}
	r.published = m.sums[metricPublished]
	r.stages = readStages(scrape{}, m, quantiles)
	if r.exactlyOnce {
		r.txns = readTxnStats(scrape{}, m)
	}
	return nil
}

// finish is when a relay was done with a backlog.
type finish struct {
	ack, confirm time.Time
	senderPID    int // the walsender streaming to the relay
}

// awaitConfirmed polls the slot every 25 ms until its confirmed position
// reaches end, and the relay's published count every 50 ms until it
// reaches rows (rows < 0: not watched), noting when each happened.
func (b *bench) awaitConfirmed(ctx context.Context, conn *pgx.Conn, relay *process, metricsURL string, rows int64, end string) (finish, error) {
	var f finish
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	for tick := 0; ; tick++ {
		select {
		case <-relay.done:
			return f, relay.exitError()
		case <-ctx.Done():
			return f, fmt.Errorf("waiting for the slot to be confirmed past %s: %w; relay log:\n%s", end, ctx.Err(), relay.log.String())
		case <-t.C:
		}
		now := time.Now()
		if f.ack.IsZero() && rows >= 0 && tick%2 == 0 {
			if m, err := scrapeMetrics(ctx, metricsURL); err == nil && m.sums[metricPublished] >= float64(rows) {
				f.ack = now
			}
		}
		st, err := readSlot(ctx, conn, slotName, end)
		if err != nil {
			return f, err
		}
		if st.activePID != 0 {
			f.senderPID = st.activePID
		}
		if st.confirmedPast {
			f.confirm = time.Now()
			if f.ack.IsZero() {
				f.ack = f.confirm
			}
			return f, nil
		}
	}
}

// copySlot copies the relay's slot, still at the backlog's start, to name,
// and returns a function that drops the copy.
func (b *bench) copySlot(ctx context.Context, conn *pgx.Conn, name string) (drop func(), err error) {
	if _, err := conn.Exec(ctx, `SELECT pg_copy_logical_replication_slot($1, $2)`, slotName, name); err != nil {
		return nil, fmt.Errorf("copy slot %s to %s: %w", slotName, name, err)
	}
	return func() {
		if err := dropSlots(context.WithoutCancel(ctx), conn, `slot_name = $1`, name); err != nil {
			b.logf("%v", err)
		}
	}, nil
}

// drain is one timing of pg_recvlogical draining a copy of the slot.
type drain struct {
	seconds   float64
	cpu       float64 // pg_recvlogical's CPU seconds
	walsender float64 // CPU seconds of the walsender feeding it; -1 if unknown
	busy      float64 // share of the machine's CPU busy meanwhile
}

// ceiling is the faster of r's drains: of the drains before and after the
// relay, the faster one is the ceiling, so that a drain slowed by the
// machine does not flatter the relay. Without drains every figure is -1.
func (r result) ceiling() drain {
	best := drain{seconds: -1, cpu: -1, walsender: -1, busy: -1}
	for _, d := range r.drains {
		if best.seconds <= 0 || d.seconds < best.seconds {
			best = d
		}
	}
	return best
}

// drain times pg_recvlogical draining the copy of the slot named slot to
// end.
func (b *bench) drain(ctx context.Context, db, slot, end string) (drain, error) {
	d := drain{walsender: -1}
	var out bytes.Buffer
	cmd := b.srv.command(ctx, "pg_recvlogical", "-d", b.srv.dsnFor(db), "-S", slot,
		"--start", "--no-loop", "-f", "/dev/null", "-E", end,
		"-o", "proto_version=1", "-o", "publication_names="+publication)
	cmd.Stdout, cmd.Stderr = &out, &out

	// The walsender ends with pg_recvlogical: keep its last CPU reading.
	var ws cpuWatch
	wctx, stopWatch := context.WithCancel(ctx)
	var watch errgroup.Group
	if b.srv.local() {
		wconn, err := b.srv.connect(ctx, db)
		if err != nil {
			stopWatch()
			return d, err
		}
		defer wconn.Close(context.WithoutCancel(ctx))
		watch.Go(func() error {
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			pid := 0
			for {
				select {
				case <-wctx.Done():
					return nil
				case <-t.C:
				}
				if pid == 0 {
					if st, err := readSlot(wctx, wconn, slot, end); err == nil {
						pid = st.activePID
					}
				}
				ws.observe(pid)
			}
		})
	}
	began, machine := time.Now(), machineCPU()
	err := cmd.Run()
	took := time.Since(began)
	d.busy = machine.busySince()
	stopWatch()
	_ = watch.Wait()
	if err != nil {
		return d, fmt.Errorf("pg_recvlogical: %w\n%s", err, out.String())
	}
	d.seconds = took.Seconds()
	d.walsender = ws.seconds()
	if u := cmd.ProcessState; u != nil {
		d.cpu = (u.UserTime() + u.SystemTime()).Seconds()
	}
	return d, nil
}

// decode times pg_logical_slot_peek_binary_changes decoding a copy of the
// slot to end inside a backend, with pgoutput and the same options: logical
// decoding with no walsender, network or client.
func (b *bench) decode(ctx context.Context, conn *pgx.Conn, end string, r *result) error {
	drop, err := b.copySlot(ctx, conn, ceilingSlot)
	if err != nil {
		return err
	}
	defer drop()
	began := time.Now()
	var n int64
	err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, $2::pg_lsn, NULL,
		'proto_version', '1', 'publication_names', $3)`, ceilingSlot, end, publication).Scan(&n)
	if err != nil {
		return fmt.Errorf("decode slot %s in SQL: %w", ceilingSlot, err)
	}
	r.decode = time.Since(began).Seconds()
	return nil
}
