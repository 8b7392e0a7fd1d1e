package e2e

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
)

// The exactly-once tests (issue 10) run the fault tests' workload through
// relays started with --delivery=exactly-once, do harm while the writers
// run, and end by reading the topics with read_committed, through franz-go
// and through kcat: every committed row exactly once, each aggregate's rows
// in commit order, no rolled-back row, and committed fences in
// __outbox_relay_checkpoints. Big transactions stay below the relay's
// default in-flight bound (5000 events), so that each PostgreSQL
// transaction fits in one Kafka transaction.

// killAfterCommit scrapes p's metrics until a Kafka transaction commits,
// then SIGKILLs p at once, most likely before it confirms the commit to
// the slot. It returns the fence the relay reported with that commit, and
// false if no commit came within timeout (p is then still running).
func killAfterCommit(t *testing.T, p *proc, timeout time.Duration) (pglogrepl.LSN, time.Duration, bool) {
	t.Helper()
	addr := p.metricsAddr(t)
	deadline := time.Now().Add(timeout)
	var base txnMetrics
	for {
		m, err := scrapeTxn(addr)
		if err == nil {
			base = m
			break
		}
		if time.Now().After(deadline) || !p.running() {
			t.Fatalf("scrape relay (pid %d): %v\n%s", p.cmd.Process.Pid, err, p.logText())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for time.Now().Before(deadline) && p.running() {
		m, err := scrapeTxn(addr)
		if err == nil && m.committed > base.committed {
			seen := time.Now()
			p.kill()
			return m.fence, time.Since(seen), true
		}
		time.Sleep(time.Millisecond)
	}
	return 0, 0, false
}

// TestExactlyOnceKill9 SIGKILLs an exactly-once relay again and again while
// eight writers commit (a tenth of their transactions rolled back),
// restarting it each time: in turn mid-stream (almost always while a Kafka
// transaction is open), a few milliseconds after a Kafka transaction
// committed (before the relay confirms it to the slot, which the test
// checks), and while it starts (reading the fence). A read_committed
// consumer must see every committed row once, in per-aggregate order.
//
// It runs alone, not in parallel: the window after a Kafka commit lasts
// milliseconds, and on a machine busy with other tests the kills missed it.
func TestExactlyOnceKill9(t *testing.T) {
	const minKills, maxKills, minInWindow = 9, 20, 2
	e := newEnv(t)
	r := newExactlyOnceRun(t, e)
	p := r.streaming(r.eoRelay(), &workload{Rows: 10000, RollbackRatio: 0.1, HeaderRatio: 0.1, BigTxnRows: 1500, Pause: 25 * time.Millisecond})

	var kills, whileWriting, midStream, afterCommit, inWindow, starting int
	for kills < minKills || (kills < maxKills && (inWindow < minInWindow || r.stillWriting())) {
		if !p.running() {
			r.tails()
			t.Fatalf("relay exited by itself before kill #%d: %v", kills+1, p.err)
		}
		committed, _, _ := r.l.counts()
		writing := r.stillWriting()
		var how string
		var fence pglogrepl.LSN
		switch kills % 3 {
		case 0:
			p.waitStreaming(time.Minute)
			time.Sleep(100*time.Millisecond + rand.N(900*time.Millisecond))
			how = "mid-stream"
			p.kill()
		case 1:
			p.waitStreaming(time.Minute)
			var lag time.Duration
			var ok bool
			fence, lag, ok = killAfterCommit(t, p, 10*time.Second)
			if !ok {
				r.tails()
				t.Fatalf("relay committed no Kafka transaction within 10s before kill #%d", kills+1)
			}
			how = fmt.Sprintf("%s after a Kafka commit with fence %s", ms(lag), fence)
			afterCommit++
		default:
			time.Sleep(rand.N(150 * time.Millisecond))
			how = "starting"
			if p.logged("streaming") > 0 {
				how = "just after it began streaming"
			}
			p.kill()
		}
		kills++
		if strings.HasPrefix(how, "starting") {
			starting++
		} else if how == "mid-stream" {
			midStream++
		}
		if writing {
			whileWriting++
		}
		st := e.waitSlotReleased(t, 10*time.Second)
		window := ""
		if fence != 0 {
			if st.confirmed < fence {
				inWindow++
				window = " (before the slot confirmed it)"
			} else {
				window = " (the slot had confirmed it)"
			}
		}
		t.Logf("kill -9 #%d %s%s, at %s, %d rows committed so far, writers running: %t; slot confirmed %s",
			kills, how, window, ms(time.Since(r.began)), committed, writing, st.confirmed)
		p = r.eoRelay()
	}
	p.waitStreaming(time.Minute)
	t.Logf("%d kills: %d mid-stream, %d right after a Kafka commit (%d of them before the slot confirmed it), %d while starting; %d while writers ran",
		kills, midStream, afterCommit, inWindow, starting, whileWriting)
	if whileWriting < minKills-1 {
		t.Errorf("only %d kills hit the writers mid-stream, want at least %d: the workload ended too soon", whileWriting, minKills-1)
	}
	if inWindow == 0 {
		t.Errorf("no kill landed between a Kafka commit and the slot's confirmation of it: the test did not prove that case")
	}
	r.waitWriters()
	t.Logf("recovery: the last relay confirmed the WAL written until the writers finished %s after its start", ms(e.catchUp(t, p.started, 2*time.Minute)))
	m := p.lastTxnMetrics(t)
	t.Logf("last relay: %v Kafka transactions committed, %v aborted, fence %s", m.committed, m.aborted, m.fence)
	if m.committed == 0 {
		t.Errorf("the last relay committed no Kafka transaction")
	}
	r.checkExactlyOnce()
	if !t.Failed() {
		r.stop(p)
	}
}

// TestExactlyOnceTakeover runs two exactly-once relays on one slot, with
// the same (default) transactional ID; their PostgreSQL sessions have
// wal_sender_timeout=5s, so that PostgreSQL drops a relay that stops
// answering within seconds. Under load the active relay is SIGSTOPped:
// the standby must take over. The old one is then SIGCONTed: it must find
// itself fenced, exit non-zero saying another relay "took over", and
// commit nothing more, so that the consumer sees every row once.
//
// It runs alone, not in parallel: beside another test, relay A once
// noticed its lost replication stream before it touched Kafka again after
// SIGCONT, and stood by instead of finding itself fenced.
func TestExactlyOnceTakeover(t *testing.T) {
	const takeover = 30 * time.Second
	e := newEnv(t)
	r := newExactlyOnceRun(t, e)
	dsn := withPGOptions(e.dsn, "-c wal_sender_timeout=5s")
	if got := walsenderTimeout(t, dsn); got != "5s" {
		t.Fatalf("wal_sender_timeout with DSN %s is %q, want 5s", dsn, got)
	}
	a := r.eoRelay("OUTBOX_RELAY_PG_DSN=" + dsn)
	a.waitStreaming(time.Minute)
	b := r.eoRelay("OUTBOX_RELAY_PG_DSN=" + dsn)
	if !b.waitLogged("standing by", 1, 30*time.Second) {
		r.tails()
		t.Fatal("relay B did not log that it stands by within 30s")
	}
	r.startWriters(&workload{Rows: 9000, RollbackRatio: 0.1, HeaderRatio: 0.1, MessageRatio: 0.3, Pause: 25 * time.Millisecond, Until: r.untilWait()})

	time.Sleep(2 * time.Second)
	if n := b.logged("streaming"); n != 0 {
		t.Fatalf("relay B streams while relay A holds the slot\n%s", b.logText())
	}
	before := a.lastTxnMetrics(t)
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	committed, _, _ := r.l.counts()
	t.Logf("relay A (pid %d) stopped at %s, %d rows committed so far; it had committed %v Kafka transactions shortly before",
		a.cmd.Process.Pid, ms(time.Since(r.began)), committed, before.committed)
	if !b.waitLogged("slot free; taking over", 1, takeover) || !b.waitLogged("streaming", 1, takeover) {
		_ = a.cmd.Process.Signal(syscall.SIGCONT)
		r.tails()
		t.Fatalf("relay B did not take over within %s of relay A's SIGSTOP", takeover)
	}
	tookOver := time.Since(stopped)
	if !r.stillWriting() {
		t.Errorf("the writers finished before relay B took over; the takeover must happen under load")
	}
	// Let relay B commit before relay A wakes up with its old transaction.
	eventually(t, 20*time.Second, "relay B commits a Kafka transaction", func() (bool, string) {
		m := b.lastTxnMetrics(t)
		return m.committed > 0, fmt.Sprintf("%v committed", m.committed)
	})
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		r.tails()
		t.Fatalf("relay A still runs 30s after SIGCONT, though relay B took its transactional ID")
	}
	code := a.cmd.ProcessState.ExitCode()
	t.Logf("relay B streams %s after relay A's SIGSTOP; relay A exited with code %d %s after SIGCONT", ms(tookOver), code, ms(time.Since(resumed)))
	if code == 0 {
		t.Errorf("relay A exit code = 0 after it was fenced, want non-zero\n%s", a.logText())
	}
	if !strings.Contains(a.logText(), "took over") {
		t.Errorf("relay A's output does not say that another relay took over\n%s", a.logText())
	}
	r.waitWriters()
	t.Logf("recovery: the slot confirmed the WAL written until the writers finished %s after relay A's SIGSTOP", ms(e.catchUp(t, stopped, 2*time.Minute)))
	m := b.lastTxnMetrics(t)
	t.Logf("relay B: %v Kafka transactions committed, %v aborted, fence %s", m.committed, m.aborted, m.fence)
	r.checkExactlyOnce()
	if !t.Failed() {
		r.stop(b)
	}
}

// TestExactlyOnceFaults does to an exactly-once relay what the fault tests
// do to an at-least-once one: the broker refusing every produce request for
// ten seconds, PostgreSQL crashing (pg_ctl restart -m immediate), and its
// walsender terminated. The same relay process must ride each out (no
// restart by the test), and a read_committed consumer must see every
// committed row once, in order, even after the PostgreSQL restart, where
// at-least-once may deliver again (FACTS.md): the fence skips what Kafka
// already holds. The faults run beside each other, each with its own
// database, slot and broker (the restart with its own server): most of each
// is waiting out a fault.
func TestExactlyOnceFaults(t *testing.T) {
	t.Parallel()
	t.Run("broker refuses writes", func(t *testing.T) {
		t.Parallel()
		e := newEnvSlot(t, pgtest.NewDatabase(t), "eo_refuses")
		r := newExactlyOnceRun(t, e)
		p := r.streaming(r.eoRelay(), &workload{Rows: 4500, RollbackRatio: 0.1, HeaderRatio: 0.1, MessageRatio: 0.3, Pause: 60 * time.Millisecond, Until: r.untilWait()})

		time.Sleep(1500 * time.Millisecond)
		r.brokerRefusesProduce()
		r.finishExactlyOnce(p)
	})

	t.Run("broker unreachable", func(t *testing.T) {
		// As TestFaultBrokerUnreachable: 10 s with new connections
		// refused, then 10 s with them held unanswered. A Kafka commit
		// waiting meanwhile goes through once the broker answers again.
		t.Parallel()
		var ln *severable
		e := newEnvSlot(t, pgtest.NewDatabase(t), "eo_unreachable", kfake.ListenFn(listenSeverable(&ln)))
		r := newExactlyOnceRun(t, e)
		p := r.streaming(r.eoRelay(), &workload{Rows: 6000, RollbackRatio: 0.1, HeaderRatio: 0.1, MessageRatio: 0.3, Pause: 100 * time.Millisecond, Until: r.untilWait()})
		r.cutBroker(ln)
		r.finishExactlyOnce(p)
	})

	t.Run("broker gone during a commit", func(t *testing.T) {
		// The broker drops the connection carrying a Kafka commit
		// (EndTxn, not processed) and refuses new ones for 3 s, so the
		// client gives the commit up with its outcome unknown. The same
		// process must start its stream and producer again from the
		// last committed fence, once the broker is back.
		t.Parallel()
		var ln *severable
		e := newEnvSlot(t, pgtest.NewDatabase(t), "eo_commit_cut", kfake.ListenFn(listenSeverable(&ln)))
		r := newExactlyOnceRun(t, e)
		p := r.streaming(r.eoRelay(), &workload{Rows: 3000, RollbackRatio: 0.1, HeaderRatio: 0.1, MessageRatio: 0.3, Pause: 50 * time.Millisecond, Until: r.untilWait()})

		time.Sleep(1500 * time.Millisecond)
		cut := make(chan error, 1)
		e.broker.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
			if !req.(*kmsg.EndTxnRequest).Commit {
				return nil, nil, false // an abort goes through; the control stays
			}
			cut <- ln.cut(refuse)
			return nil, errors.New("connection cut during the commit"), true
		})
		select {
		case err := <-cut:
			if err != nil {
				t.Fatalf("cut: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the relay sent no Kafka commit within 30s")
		}
		// While the restart waits for the broker, the process is alive
		// and not ready, and says why. The broker stays away for 3 s, and
		// until the relay has been seen waiting (15 s at most).
		addr := p.metricsAddr(t)
		var waiting bool
		var probes string
		for start := time.Now(); time.Since(start) < 3*time.Second || (!waiting && time.Since(start) < 15*time.Second); time.Sleep(100 * time.Millisecond) {
			rc, rbody := get(addr, "/readyz")
			hc, hbody := get(addr, "/healthz")
			probes = fmt.Sprintf("/readyz %d %q, /healthz %d %q", rc, rbody, hc, hbody)
			if rc == http.StatusServiceUnavailable && strings.Contains(rbody, "restarting") {
				waiting = true
				if hc != http.StatusOK {
					t.Errorf("while the restart waits: %s; want /healthz 200", probes)
				}
			}
		}
		if !waiting {
			t.Errorf("the restart was never seen waiting: last %s; want /readyz 503 saying it restarts", probes)
		}
		if err := ln.heal(); err != nil {
			t.Fatalf("heal: %v", err)
		}
		if !r.stillWriting() {
			t.Error("the writers finished before the cut ended; it must hit them mid-stream")
		}
		eventually(t, time.Minute, "the relay counts its restart", func() (bool, string) {
			m := metricLines(t, p, "outbox_relay_kafka_transaction_restarts_total")
			return m == "outbox_relay_kafka_transaction_restarts_total=1", m
		})
		if !strings.Contains(p.logText(), "did not commit for certain") {
			t.Errorf("the relay logged no restart:\n%s", p.logText())
		}
		r.finishExactlyOnce(p)
	})

	t.Run("postgres restart immediate", func(t *testing.T) {
		t.Parallel()
		const big = 3000
		cluster := privateCluster(t)
		e := newEnvOn(t, cluster.NewDatabase(t))
		r := newExactlyOnceRun(t, e)
		p := r.streaming(r.eoRelay(), &workload{Rows: 4000, RollbackRatio: 0.1, HeaderRatio: 0.1, BigTxnRows: big, Pause: 50 * time.Millisecond, Reconnect: true, Until: r.untilWait()})

		r.waitTxnOf(big)
		r.restartPostgres(cluster, p, big, 3*time.Second)
		r.finishExactlyOnce(p)
	})

	t.Run("walsender terminated", func(t *testing.T) {
		t.Parallel()
		const big = 3000
		e := newEnvSlot(t, pgtest.NewDatabase(t), "eo_walsender")
		r := newExactlyOnceRun(t, e)
		p := r.streaming(r.eoRelay(), &workload{Rows: 3600, RollbackRatio: 0.1, HeaderRatio: 0.1, BigTxnRows: big, Pause: 50 * time.Millisecond, Until: r.untilWait()})

		r.waitTxnOf(big)
		r.terminateWalsender(p, 1, fmt.Sprintf("right after a %d-row transaction committed", big))
		for i := 2; i <= 3; i++ {
			time.Sleep(1200 * time.Millisecond)
			r.terminateWalsender(p, i, "mid-stream")
		}
		r.finishExactlyOnce(p)
	})
}

// finishExactlyOnce checks the topics as checkExactlyOnce does and that the
// process p ran through the fault and is still running (restarts inside
// it are allowed), then stops it.
func (r *faultRun) finishExactlyOnce(p *proc) {
	r.t.Helper()
	r.waitWriters()
	if p.running() {
		m := p.lastTxnMetrics(r.t)
		r.t.Logf("relay: %v Kafka transactions committed, %v aborted, fence %s", m.committed, m.aborted, m.fence)
	}
	r.checkExactlyOnce()
	if !p.running() {
		r.t.Errorf("relay pid %d is not running at the end: %v", p.cmd.Process.Pid, p.err)
	}
	if !r.t.Failed() {
		r.stop(p)
	}
}

// TestExactlyOnceCleanStop SIGTERMs an exactly-once relay three times
// under load and restarts it; it is configured by flags this time, with
// its own transactional ID. Each stop must exit 0 within the shutdown
// timeout, committing or aborting its open Kafka transaction, and the
// consumer must see every row once.
//
// It runs alone, not in parallel: its stops must land while the writers
// run, and load stretches the stops, not the writers' pauses.
func TestExactlyOnceCleanStop(t *testing.T) {
	const shutdown = 15 * time.Second
	e := newEnv(t)
	r := newExactlyOnceRun(t, e)
	args := []string{"--delivery=exactly-once", "--kafka-transaction-interval=200ms", "--kafka-transactional-id=outbox-relay-e2e-clean-stop"}
	settings := append([]string{"OUTBOX_RELAY_SHUTDOWN_TIMEOUT=" + shutdown.String()}, faultSettings...)
	start := func() *proc {
		p := e.startRun(args, settings...)
		r.procs = append(r.procs, p)
		p.waitStreaming(time.Minute)
		return p
	}
	p := start()
	r.startWriters(&workload{Rows: 7000, RollbackRatio: 0.1, HeaderRatio: 0.1, BigTxnRows: 1500, Pause: 25 * time.Millisecond})

	for i := range 3 {
		time.Sleep(500*time.Millisecond + rand.N(time.Second))
		committed, _, _ := r.l.counts()
		writing := r.stillWriting()
		m := p.lastTxnMetrics(t)
		stopped := time.Now()
		code := p.term(shutdown + 5*time.Second)
		st := e.waitSlotReleased(t, 10*time.Second)
		t.Logf("SIGTERM #%d at %s, %d rows committed so far, writers running: %t: exit %d after %s; %v Kafka transactions committed shortly before; slot confirmed %s",
			i+1, ms(time.Since(r.began)), committed, writing, code, ms(time.Since(stopped)), m.committed, st.confirmed)
		if code != 0 {
			t.Errorf("exit code after SIGTERM #%d = %d, want 0\n%s", i+1, code, p.logText())
		}
		if !writing {
			t.Errorf("the writers finished before SIGTERM #%d; it must hit them mid-stream", i+1)
		}
		p = start()
	}
	r.waitWriters()
	t.Logf("recovery: the last relay confirmed the WAL written until the writers finished %s after its start", ms(e.catchUp(t, p.started, 2*time.Minute)))
	r.checkExactlyOnce()
	if code := p.term(shutdown + 5*time.Second); code != 0 {
		t.Errorf("exit code after the last SIGTERM = %d, want 0\n%s", code, p.logText())
	}
}
