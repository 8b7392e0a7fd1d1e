package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// latencyRun runs W3: a steady load with the relay running.
func (b *bench) latencyRun(ctx context.Context, w workload, run int, db string) (result, error) {
	r := w.newResult(run)
	// The per-second windows count as good at the latency target: 5 ms
	// for at-least-once, the transaction interval + 10 ms for exactly-once.
	r.goodLimit = 0.005
	if w.exactlyOnce {
		r.goodLimit = (b.o.txnInterval + 10*time.Millisecond).Seconds()
	}
	broker, brokers, err := b.startBroker(ctx, w)
	if err != nil {
		return r, err
	}
	if broker != nil {
		defer broker.stop(10 * time.Second)
	}
	metricsAddr, err := freeAddr()
	if err != nil {
		return r, err
	}
	cmd := exec.Command(b.relayBin, "run")
	cmd.Env = b.relayEnv(w, b.srv.dsnFor(db), brokers, metricsAddr, "")
	broker0 := brokerCPUBase(broker)
	relay, err := start("relay", cmd)
	if err != nil {
		return r, err
	}
	defer relay.kill()
	if err := waitReady(ctx, relay, "http://"+metricsAddr+"/readyz"); err != nil {
		return r, err
	}
	conn, err := b.srv.connect(ctx, db)
	if err != nil {
		return r, err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	// One second of warm-up (topic creation, first metadata, connections)
	// is written and acknowledged before the measured rows.
	warm := int64(w.rate)
	total := warm + w.rows
	agg := b.aggregateType(w, run)
	writer := newSteadyWriter(w, total, agg)
	var rec *receiver
	g, gctx := errgroup.WithContext(ctx)
	consumeCtx, stopConsuming := context.WithCancel(gctx)
	defer stopConsuming()
	if b.o.w3Consume {
		if rec, err = newReceiver(brokers, "outbox."+agg, total); err != nil {
			return r, err
		}
		g.Go(func() error { return rec.run(consumeCtx) })
	}
	b.logf("%s run %d: warming up (%d rows)", w.name, run, warm)
	if _, err := writer.run(ctx, b.srv, db, b.o.w3Writers, 0, warm); err != nil {
		return r, err
	}
	var lsn string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		return r, err
	}
	if _, err := b.awaitConfirmed(ctx, conn, relay, "", -1, lsn); err != nil {
		return r, err
	}
	before, err := scrapeMetrics(ctx, "http://"+metricsAddr+"/metrics")
	if err != nil {
		return r, fmt.Errorf("read the relay's metrics: %w", err)
	}

	b.logf("%s run %d: writing %d rows at %g/s", w.name, run, w.rows, w.rate)
	var lag lagSampler
	lagCtx, stopLag := context.WithCancel(gctx)
	var lagDone errgroup.Group
	lagDone.Go(func() error { return lag.run(lagCtx, b.srv, db, 250*time.Millisecond) })
	machine, budget := machineCPU(), b.startBudget(ctx, conn, relay, broker)
	writing := time.Now()
	r.rate, err = writer.run(ctx, b.srv, db, b.o.w3Writers, warm, total)
	wrote := time.Since(writing)
	r.busy = machine.busySince()
	r.cores = budget.end()
	stopLag()
	if lerr := lagDone.Wait(); err == nil {
		err = lerr
	}
	if err != nil {
		return r, err
	}
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		return r, err
	}
	f, err := b.awaitConfirmed(ctx, conn, relay, "", -1, lsn)
	if err != nil {
		return r, err
	}
	if err := b.measureProcesses(ctx, &r, relay, broker, broker0, f.senderPID, metricsAddr); err != nil {
		return r, err
	}
	after, err := scrapeMetrics(ctx, "http://"+metricsAddr+"/metrics")
	if err != nil {
		return r, fmt.Errorf("read the relay's metrics: %w", err)
	}
	r.rows = total
	if w.exactlyOnce {
		r.txns = readTxnStats(before, after)
		r.txns.rows, r.txns.seconds = w.rows, wrote.Seconds()
	}
	h := after.histogramOf(metricLatency).minus(before.histogramOf(metricLatency))
	r.buckets = h.bounds
	p := after.histogramOf(metricPublish).minus(before.histogramOf(metricPublish))
	r.hist, r.produce = map[float64]bucketQuantile{}, map[float64]bucketQuantile{}
	for _, q := range quantiles {
		if v, ok := h.quantile(q); ok {
			r.hist[q] = v
		}
		if v, ok := p.quantile(q); ok {
			r.produce[q] = v
		}
	}
	r.stages = readStages(before, after, quantiles)
	lags := lag.values()
	r.lagP50, r.lagMax = percentile(lags, 0.5), percentile(lags, 1)

	if rec != nil {
		deadline := time.Now().Add(30 * time.Second)
		for rec.count.Load() < total && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		var lat []float64
		perSecond := map[int64][]float64{} // by the second of the commit
		for n := warm; n < total; n++ {
			c, got := writer.committed[n].Load(), rec.received[n].Load()
			if c != 0 && got != 0 {
				l := max(0, float64(got-c)/1e9)
				lat = append(lat, l)
				perSecond[c/1e9] = append(perSecond[c/1e9], l)
			}
		}
		for _, ls := range perSecond {
			if len(ls) < 100 { // the ends of the run
				continue
			}
			r.seconds++
			if percentile(ls, 0.99) <= r.goodLimit {
				r.goodSeconds++
			}
		}
		if b.o.w3Trace != "" {
			if err := writeTrace(b.o.w3Trace, writer, rec, warm, total); err != nil {
				return r, err
			}
		}
		r.consumeN = int64(len(lat))
		r.consumed = map[float64]float64{}
		for _, q := range append(quantiles, 1) {
			r.consumed[q] = percentile(lat, q)
		}
	}
	stopConsuming()
	if err := g.Wait(); err != nil {
		return r, err
	}
	if err := relay.stop(time.Minute); err != nil {
		b.logf("%v", err)
	}
	return r, nil
}

// writeTrace writes rows from to to-1 as CSV: row, commit time (unix
// nanoseconds, when the writer's commit returned), latency to the consumer
// in nanoseconds (empty if not received).
func writeTrace(path string, w *steadyWriter, rec *receiver, from, to int64) error {
	var b bytes.Buffer
	b.WriteString("row,commit_unix_ns,latency_ns\n")
	for n := from; n < to; n++ {
		c, got := w.committed[n].Load(), rec.received[n].Load()
		lat := ""
		if c != 0 && got != 0 {
			lat = strconv.FormatInt(max(0, got-c), 10)
		}
		fmt.Fprintf(&b, "%d,%d,%s\n", n, c, lat)
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// waitReady polls the relay's /readyz until it answers 200.
func waitReady(ctx context.Context, relay *process, url string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := httpClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("relay not ready after a minute; its log:\n%s", relay.log.String())
		}
		select {
		case <-relay.done:
			return relay.exitError()
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// percentile returns the q-quantile of vs (nearest rank), or 0 for none.
func percentile(vs []float64, q float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(len(s)-1, max(0, i))]
}

// cores is the CPU each party used over a span of time, in cores (CPU
// seconds per second); -1 if unknown.
type cores struct{ relay, broker, postgres, bench float64 }

// budget measures cores from its start.
type budget struct {
	began                        time.Time
	relay, broker, bench         int // pids; 0 if not measured
	postgres                     []int
	relay0, broker0, bench0, pg0 float64
}

// startBudget notes the CPU used so far by the relay, the broker, this
// program (the writers and the consumer) and the server processes that
// pg_stat_activity lists (backends, walsenders, background processes) if
// the server is local.
func (b *bench) startBudget(ctx context.Context, conn *pgx.Conn, relay *process, broker brokerProc) *budget {
	bu := &budget{began: time.Now(), relay: relay.pid(), bench: os.Getpid()}
	if broker != nil {
		bu.broker = broker.pid()
	}
	if b.srv.local() {
		rows, err := conn.Query(ctx, "SELECT pid FROM pg_stat_activity")
		if err == nil {
			for rows.Next() {
				var pid int32
				if rows.Scan(&pid) == nil {
					bu.postgres = append(bu.postgres, int(pid))
				}
			}
			rows.Close()
		}
	}
	bu.relay0, bu.broker0, bu.bench0, bu.pg0 = bu.read()
	return bu
}

func (bu *budget) read() (relay, broker, bench, pg float64) {
	one := func(pid int) float64 {
		if pid == 0 {
			return -1
		}
		s, err := cpuSeconds(pid)
		if err != nil {
			return -1
		}
		return s
	}
	pg = -1
	for _, pid := range bu.postgres {
		if s := one(pid); s >= 0 {
			pg = max(pg, 0) + s
		}
	}
	return one(bu.relay), one(bu.broker), one(bu.bench), pg
}

// end returns the cores used since start. Server processes that ended
// meanwhile are left out.
func (bu *budget) end() cores {
	secs := time.Since(bu.began).Seconds()
	relay, broker, bench, pg := bu.read()
	per := func(now, then float64) float64 {
		if now < 0 || then < 0 {
			return -1
		}
		return max(0, now-then) / secs
	}
	return cores{relay: per(relay, bu.relay0), broker: per(broker, bu.broker0), postgres: per(pg, bu.pg0), bench: per(bench, bu.bench0)}
}

// quantiles are those reported for W3.
var quantiles = []float64{0.5, 0.99, 0.999}
