package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/schema"
)

// The fault tests run a workload of concurrent writers (workload_test.go)
// through a relay, do harm while the writers run, and end by draining the
// topics and checking them against what was committed: no committed row
// lost, each aggregate's first deliveries in commit order, no rolled-back
// row. Duplicates are allowed, as at-least-once delivery allows them, and
// logged. Each logs its recovery time: from the end of the fault to the
// relay streaming again, and to the slot's confirmed position reaching
// the WAL position the server had then.

// faultSettings are the relay settings every fault test adds: the relay
// confirms its position four times a second, so that the slot shows
// recovery with that resolution.
var faultSettings = []string{"OUTBOX_RELAY_STATUS_INTERVAL=250ms"}

// faultRun is one fault test's bookkeeping: the workload, the relays it
// started, and the collector that drains at the end.
type faultRun struct {
	t     *testing.T
	e     *env
	w     *workload
	l     ledger
	c     *collector
	procs []*proc
	began time.Time
	env   []string // every relay's environment beyond faultSettings
	// beforeKill, when set, is called with each relay kill9Repeatedly is
	// about to kill or stop.
	beforeKill func(p *proc)

	done    <-chan error
	until   chan struct{} // the workload's Until, closed by waitWriters
	writing bool
	werr    error
	summed  bool // waitWriters logged what the writers wrote
}

// newFaultRun returns a run on e whose collector reads from the start of
// the topics; startWriters starts w.
func newFaultRun(t *testing.T, e *env) *faultRun {
	return &faultRun{t: t, e: e, c: newCollector(e.consumer())}
}

// relay starts a relay with faultSettings and extraEnv.
func (r *faultRun) relay(extraEnv ...string) *proc {
	r.t.Helper()
	p := r.e.start(slices.Concat(faultSettings, r.env, extraEnv)...)
	r.procs = append(r.procs, p)
	return p
}

// startWriters starts the workload w in the background.
func (r *faultRun) startWriters(w *workload) {
	r.w, r.began, r.writing = w, time.Now(), true
	r.done = w.start(r.t.Context(), r.e.dsn, &r.l)
}

// untilWait returns the Until of a workload whose writers go on past its
// Rows until waitWriters stops them: faults meant to hit running writers
// then do, however long a loaded machine takes to reach them.
func (r *faultRun) untilWait() <-chan struct{} {
	r.until = make(chan struct{})
	return r.until
}

// streaming waits until p streams, then starts the workload w, and returns
// p: the start of most fault tests.
func (r *faultRun) streaming(p *proc, w *workload) *proc {
	r.t.Helper()
	p.waitStreaming(time.Minute)
	r.startWriters(w)
	return p
}

// stillWriting reports whether the writers are still at work. Writers
// started with untilWait are until waitWriters, unless one failed, which
// waitWriters then reports.
func (r *faultRun) stillWriting() bool {
	if r.writing {
		select {
		case r.werr = <-r.done:
			r.writing = false
		default:
		}
	}
	return r.writing
}

// waitWriters waits for the writers, failing the test if one failed, and
// logs what they wrote.
func (r *faultRun) waitWriters() {
	r.t.Helper()
	if r.until != nil {
		close(r.until)
		r.until = nil
	}
	if r.writing {
		r.werr = <-r.done
		r.writing = false
	}
	if r.werr != nil {
		r.tails()
		r.t.Fatalf("workload: %v", r.werr)
	}
	if r.summed {
		return
	}
	r.summed = true
	committed, rolled, txns := r.l.counts()
	doubt, reconnects := r.l.faults()
	r.t.Logf("writers: %d committed rows in %d transactions, %d rolled-back rows, %d rows in doubt, %d reconnections, in %s (seed %d)",
		committed, txns, rolled, doubt, reconnects, time.Since(r.began).Round(time.Millisecond), r.w.Seed)
}

// check waits for the writers, drains the topics and checks them:
// duplicates are logged, not failed.
func (r *faultRun) check() *report {
	r.t.Helper()
	r.waitWriters()
	rep := r.l.drain(r.t, r.c, 3*time.Minute, 3*time.Second)
	committed, _, _ := r.l.counts()
	r.t.Logf("delivered: %s", rep)
	r.t.Logf("duplicates: %d records (%.2f%% of %d committed rows); rows by number of deliveries: %v",
		rep.Duplicates, 100*float64(rep.Duplicates)/float64(max(committed, 1)), committed, r.c.deliveries())
	rep.assert(r.t, true)
	logWarnings(r.t, r.procs...)
	if r.t.Failed() {
		r.tails()
	}
	return rep
}

// tails logs the end of every relay's log.
func (r *faultRun) tails() {
	r.t.Helper()
	logTails(r.t, r.procs)
}

// stop SIGTERMs p, which must still be running, and expects exit code 0.
func (r *faultRun) stop(p *proc) {
	r.t.Helper()
	select {
	case <-p.done:
		r.t.Errorf("relay (pid %d) is no longer running: %v\n%s", p.cmd.Process.Pid, p.err, p.logText())
		return
	default:
	}
	if code := p.term(40 * time.Second); code != 0 {
		r.t.Errorf("exit code after SIGTERM = %d, want 0\n%s", code, p.logText())
	}
}

// logged returns how many log lines of p have a message starting with msg.
func (p *proc) logged(msg string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, line := range p.logs {
		if strings.Contains(line, `"msg":"`+msg) {
			n++
		}
	}
	return n
}

// waitLogged waits until p has logged a message starting with msg n times,
// and reports whether it did before timeout, and before p exited.
func (p *proc) waitLogged(msg string, n int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for p.logged(msg) < n {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-p.done:
			return p.logged(msg) >= n
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true
}

// loggedAt returns the time of p's first log line with a message starting
// with msg.
func (p *proc) loggedAt(msg string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, line := range p.logs {
		if strings.Contains(line, `"msg":"`+msg) {
			var rec struct {
				Time time.Time `json:"time"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil {
				return rec.Time, true
			}
		}
	}
	return time.Time{}, false
}

// running reports whether p has not exited.
func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// query runs fn on a new connection to e's database, retrying the
// connection until timeout (the server may be restarting).
func (e *env) query(t *testing.T, timeout time.Duration, fn func(ctx context.Context, conn *pgx.Conn) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		conn, err := pgx.Connect(ctx, e.dsn)
		if err == nil {
			err = fn(ctx, conn)
			conn.Close(context.WithoutCancel(ctx))
			if err == nil {
				return
			}
		}
		last = err
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	t.Fatalf("query %s: %v", e.dsn, last)
}

// walLSN returns the server's current WAL write position.
func (e *env) walLSN(t *testing.T) pglogrepl.LSN {
	t.Helper()
	var lsn pglogrepl.LSN
	e.query(t, time.Minute, func(ctx context.Context, conn *pgx.Conn) error {
		var text string
		if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&text); err != nil {
			return err
		}
		var err error
		lsn, err = pglogrepl.ParseLSN(text)
		return err
	})
	return lsn
}

// slotState is what pg_replication_slots says of e's slot.
type slotState struct {
	confirmed pglogrepl.LSN
	activePID int // 0 when no connection streams from it
}

func (e *env) slotState(t *testing.T) slotState {
	t.Helper()
	var st slotState
	e.query(t, time.Minute, func(ctx context.Context, conn *pgx.Conn) error {
		var text string
		var pid *int
		err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text, active_pid FROM pg_replication_slots
			WHERE slot_name = $1 AND database = current_database()`, e.slot).Scan(&text, &pid)
		if err != nil {
			return fmt.Errorf("read slot %q: %w", e.slot, err)
		}
		if st.confirmed, err = pglogrepl.ParseLSN(text); err != nil {
			return err
		}
		if pid != nil {
			st.activePID = *pid
		}
		return nil
	})
	return st
}

// catchUp waits until the slot's confirmed position reaches the server's
// WAL position as of the call, and returns the time since since. It fails
// the test after timeout.
func (e *env) catchUp(t *testing.T, since time.Time, timeout time.Duration) time.Duration {
	t.Helper()
	target := e.walLSN(t)
	deadline := time.Now().Add(timeout)
	for {
		st := e.slotState(t)
		if st.confirmed >= target {
			return time.Since(since)
		}
		if time.Now().After(deadline) {
			t.Errorf("slot %q confirmed %s %s after the fault ended, still behind the WAL position %s the server had then",
				e.slot, st.confirmed, time.Since(since).Round(time.Millisecond), target)
			return time.Since(since)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// finishSameProcess checks the broker's contents and that the process p
// ran through the fault and is still running, then stops it.
func (r *faultRun) finishSameProcess(p *proc) {
	r.t.Helper()
	r.check()
	if !p.running() {
		r.t.Errorf("relay pid %d is not running at the end: %v", p.cmd.Process.Pid, p.err)
	}
	if !r.t.Failed() {
		r.stop(p)
	}
}

// waitTxnOf waits up to a minute for the writers to commit a transaction of
// n rows.
func (r *faultRun) waitTxnOf(n int) {
	r.t.Helper()
	for deadline := time.Now().Add(time.Minute); !r.l.hasTxnOf(n); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) || !r.stillWriting() {
			r.t.Fatalf("no transaction of %d rows committed", n)
		}
	}
}

// ms rounds d for logs.
func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// TestFaultKill9Repeated SIGKILLs the relay at random moments, some while
// it starts and some while it streams, at least five times while writers
// run, restarting it each time.
func TestFaultKill9Repeated(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := newFaultRun(t, e)
	p := r.streaming(r.relay(), &workload{Rows: 5000, RollbackRatio: 0.1, HeaderRatio: 0.1, BigTxnRows: 1500, Pause: 40 * time.Millisecond})
	r.kill9Repeatedly(p, 5)
}

// kill9Repeatedly SIGKILLs p at random moments, some while it starts and
// some while it streams, at least minKills times and on while r's writers
// run (up to three times minKills), restarting it each time; then it
// checks what was delivered and stops the last relay.
func (r *faultRun) kill9Repeatedly(p *proc, minKills int) *report {
	t, e := r.t, r.e
	t.Helper()
	kills, whileStarting, whileWriting := 0, 0, 0
	for kills < minKills || (r.stillWriting() && kills < 3*minKills) {
		if kills%2 == 1 {
			// Let it stream, so that the kill hits it mid-stream.
			p.waitStreaming(time.Minute)
			time.Sleep(200*time.Millisecond + rand.N(1800*time.Millisecond))
		} else {
			// Most likely while it starts: connecting, checking, standing
			// by while PostgreSQL has not yet seen the last one go.
			time.Sleep(rand.N(60 * time.Millisecond))
		}
		if !p.running() {
			r.tails()
			t.Fatalf("relay exited by itself before kill #%d: %v", kills+1, p.err)
		}
		phase := "streaming"
		if p.logged("streaming") == 0 {
			phase, whileStarting = "starting", whileStarting+1
		}
		committed, _, _ := r.l.counts()
		writing := r.stillWriting()
		if writing {
			whileWriting++
		}
		if r.beforeKill != nil {
			r.beforeKill(p)
		}
		p.kill()
		kills++
		t.Logf("kill -9 #%d while %s, at %s, %d rows committed so far, writers running: %t",
			kills, phase, ms(time.Since(r.began)), committed, writing)
		p = r.relay()
	}
	p.waitStreaming(time.Minute)
	var toStream []time.Duration
	for _, q := range r.procs[1:] {
		if at, ok := q.loggedAt("streaming"); ok {
			toStream = append(toStream, ms(at.Sub(q.started)))
		}
	}
	t.Logf("%d kills (%d while starting, %d while writers ran); each restarted relay streamed this long after its start: %v",
		kills, whileStarting, whileWriting, toStream)
	r.waitWriters()
	t.Logf("recovery: the last relay streams %s after its start and has confirmed the WAL written until the writers finished %s after its start",
		toStream[len(toStream)-1], ms(e.catchUp(t, p.started, 2*time.Minute)))
	rep := r.check()
	if r.beforeKill != nil {
		r.beforeKill(p)
	}
	if !t.Failed() {
		r.stop(p)
	}
	return rep
}

// TestFaultBrokerRejectsProduce has the broker fail every produce request
// for ten seconds with retriable errors, NOT_LEADER_OR_FOLLOWER then
// NOT_ENOUGH_REPLICAS, while writers run: the same relay process must
// ride it out and deliver everything.
func TestFaultBrokerRejectsProduce(t *testing.T) {
	t.Parallel()
	e := newEnvSlot(t, pgtest.NewDatabase(t), "fault_rejects")
	r := newFaultRun(t, e)
	p := r.streaming(r.relay(), &workload{Rows: 4000, RollbackRatio: 0.1, HeaderRatio: 0.1, MessageRatio: 0.3, Pause: 100 * time.Millisecond, Until: r.untilWait()})

	time.Sleep(3 * time.Second)
	r.brokerRefusesProduce()
	r.finishSameProcess(p)
}

// brokerRefusesProduce has the broker fail every produce request for ten
// seconds with retriable errors, NOT_LEADER_OR_FOLLOWER then
// NOT_ENOUGH_REPLICAS, while r's writers run; the slot must not advance
// meanwhile, and must catch up after.
func (r *faultRun) brokerRefusesProduce() {
	t, e := r.t, r.e
	t.Helper()
	began := time.Now()
	fault := func(code *kerr.Error) *kfake.FaultHandle {
		return e.broker.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: code, Count: -1})
	}
	first := fault(kerr.NotLeaderForPartition)
	time.Sleep(time.Second) // for acknowledgements and commits already on their way
	before := e.slotState(t).confirmed
	time.Sleep(4 * time.Second)
	second := fault(kerr.NotEnoughReplicas) // before the first goes: no gap
	first.Remove()
	time.Sleep(5 * time.Second)
	after, wal := e.slotState(t).confirmed, e.walLSN(t)
	second.Remove()
	ended := time.Now()
	t.Logf("fault of %s: %d produce requests failed with NOT_LEADER_OR_FOLLOWER, then %d with NOT_ENOUGH_REPLICAS; slot confirmed %s 1s into it, %s at its end, when the WAL was at %s",
		ms(ended.Sub(began)), first.Hits(), second.Hits(), before, after, wal)
	if first.Hits() == 0 || second.Hits() == 0 {
		t.Fatal("a fault met no produce request: the test proves nothing")
	}
	if after != before {
		t.Errorf("the slot's confirmed position moved from %s to %s while the broker failed every produce request", before, after)
	}
	if !r.stillWriting() {
		t.Errorf("the writers finished before the fault ended; the fault must hit them mid-stream")
	}
	t.Logf("recovery: the slot confirmed the WAL written until the fault ended %s after it ended", ms(e.catchUp(t, ended, 2*time.Minute)))
}

// terminateWalsender terminates the walsender serving p, the i-th time,
// why saying when, and waits for p to stream again and its slot to catch up.
func (r *faultRun) terminateWalsender(p *proc, i int, why string) {
	t, e := r.t, r.e
	t.Helper()
	streams := p.logged("streaming")
	var walsender int
	e.query(t, 10*time.Second, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, e.slot).Scan(&walsender)
	})
	var terminated bool
	e.query(t, 10*time.Second, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, walsender).Scan(&terminated)
	})
	ended := time.Now()
	if !terminated {
		t.Fatalf("pg_terminate_backend(%d) returned false", walsender)
	}
	if !r.stillWriting() {
		t.Errorf("the writers finished before termination #%d; it must hit them mid-stream", i)
	}
	if !p.waitLogged("streaming", streams+1, time.Minute) {
		r.tails()
		t.Fatalf("relay not streaming again a minute after its walsender (pid %d) was terminated", walsender)
	}
	toStream := time.Since(ended)
	t.Logf("walsender pid %d terminated (#%d, %s); recovery: the relay streams again %s after it, and its slot confirmed the WAL written until then %s after it",
		walsender, i, why, ms(toStream), ms(e.catchUp(t, ended, 2*time.Minute)))
}

// privateCluster starts a PostgreSQL cluster of the test's own, which it
// may restart, stopped when the test ends.
func privateCluster(t *testing.T) *pgtest.Cluster {
	t.Helper()
	cluster, err := pgtest.Start(t.Context(), pgtest.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cluster.Stop(); err != nil {
			t.Error(err)
		}
	})
	return cluster
}

// restartPostgres crashes cluster (restart -m immediate) twice while r's
// writers run: right away, once a big-row transaction has committed, and
// pause later, mid-stream; each time p must stream again and catch up.
func (r *faultRun) restartPostgres(cluster *pgtest.Cluster, p *proc, big int, pause time.Duration) {
	t, e := r.t, r.e
	t.Helper()
	for i, why := range []string{fmt.Sprintf("right after a %d-row transaction committed", big), "mid-stream"} {
		if i > 0 {
			time.Sleep(pause)
		}
		streams := p.logged("streaming")
		began := time.Now()
		if err := cluster.Restart(t.Context(), "immediate"); err != nil {
			t.Fatal(err)
		}
		ended := time.Now()
		if !r.stillWriting() {
			t.Errorf("the writers finished before restart #%d; it must hit them mid-stream", i+1)
		}
		if !p.waitLogged("streaming", streams+1, time.Minute) {
			r.tails()
			t.Fatalf("relay not streaming again a minute after restart #%d", i+1)
		}
		toStream := time.Since(ended)
		t.Logf("restart #%d (immediate, %s) took %s; recovery: the relay streams again %s after it, and its slot confirmed the WAL written until then %s after it",
			i+1, why, ms(ended.Sub(began)), ms(toStream), ms(e.catchUp(t, ended, 2*time.Minute)))
	}
}

// cutBroker cuts the relay off the broker behind ln twice for ten seconds
// while r's writers run, first refusing new connections, then holding them
// unanswered; the slot must not advance during a cut, and must catch up
// after it.
func (r *faultRun) cutBroker(ln *severable) {
	t, e := r.t, r.e
	t.Helper()
	for _, cut := range []struct {
		name string
		mode cutMode
	}{{"refused", refuse}, {"blackholed", blackhole}} {
		time.Sleep(2 * time.Second)
		severedBefore, heldBefore := ln.counts()
		if err := ln.cut(cut.mode); err != nil {
			t.Fatalf("cut: %v", err)
		}
		time.Sleep(time.Second) // for acknowledgements and commits already on their way
		before := e.slotState(t).confirmed
		time.Sleep(9 * time.Second)
		after, wal := e.slotState(t).confirmed, e.walLSN(t)
		if err := ln.heal(); err != nil {
			t.Fatalf("heal: %v", err)
		}
		ended := time.Now()
		severed, held := ln.counts()
		if !r.stillWriting() {
			t.Errorf("the writers finished before the %s cut ended; the cut must hit them mid-stream", cut.name)
		}
		t.Logf("cut, new connections %s, for 10s: %d connections closed, %d held unanswered; slot confirmed %s 1s into it, %s at its end, when the WAL was at %s",
			cut.name, severed-severedBefore, held-heldBefore, before, after, wal)
		if after != before {
			t.Errorf("the slot's confirmed position moved from %s to %s while the broker was cut off", before, after)
		}
		t.Logf("recovery: the slot confirmed the WAL written until the %s cut ended %s after it ended",
			cut.name, ms(e.catchUp(t, ended, 2*time.Minute)))
	}
}

// TestFaultBrokerUnreachable cuts the relay off the broker twice for ten
// seconds while writers run: first every connection is closed and new
// ones are refused, then every connection is closed and new ones are
// accepted and never answered (a blackhole). The broker listens through
// a severable listener, so it advertises the address the relay reaches
// it by. The same relay process must ride both out.
func TestFaultBrokerUnreachable(t *testing.T) {
	t.Parallel() // beside the other broker and server faults, with a slot of its own
	var ln *severable
	e := newEnvSlot(t, pgtest.NewDatabase(t), "fault_unreachable", kfake.ListenFn(listenSeverable(&ln)))
	r := newFaultRun(t, e)
	p := r.streaming(r.relay(), &workload{Rows: 6000, RollbackRatio: 0.1, HeaderRatio: 0.1, MessageRatio: 0.3, Pause: 100 * time.Millisecond, Until: r.untilWait()})

	r.cutBroker(ln)
	r.finishSameProcess(p)
}

// TestFaultPostgresRestart crashes the relay's own PostgreSQL twice
// (pg_ctl restart -m immediate) while writers run: once as soon as a
// 20,000-row transaction commits, while the relay is most likely inside
// it, and once a few seconds later. The writers reconnect, counting a row
// committed only when Commit returned nil, and the same relay process must
// reconnect and deliver everything. PostgreSQL 15 may send again rows the
// relay had confirmed (FACTS.md): duplicates are reported, not failed.
func TestFaultPostgresRestart(t *testing.T) {
	t.Parallel()
	const big = 20000
	cluster := privateCluster(t)
	e := newEnvOn(t, cluster.NewDatabase(t))
	r := newFaultRun(t, e)
	p := r.streaming(r.relay(), &workload{Rows: 4000, RollbackRatio: 0.1, HeaderRatio: 0.1, BigTxnRows: big, Pause: 80 * time.Millisecond, Reconnect: true, Until: r.untilWait()})

	r.waitTxnOf(big)
	r.restartPostgres(cluster, p, big, 4*time.Second)
	t.Logf("the relay resumed an open transaction after a reconnect %d times", p.logged("resuming transaction after reconnect"))
	r.finishSameProcess(p)
}

// TestFaultWalsenderTerminated terminates the walsender serving the relay
// while writers run: three times as soon as a 20,000-row transaction
// commits, while the relay is most likely inside it (so that it must
// resume after the rows it published), then twice more a few seconds
// apart. The same relay process must reconnect and deliver everything.
func TestFaultWalsenderTerminated(t *testing.T) {
	t.Parallel()
	const big = 20000
	e := newEnvSlot(t, pgtest.NewDatabase(t), "fault_walsender")
	r := newFaultRun(t, e)
	// The writers go on until the last termination: with 5,000 rows and an
	// end of their own, beside other tests, they once finished before the
	// fifth.
	p := r.streaming(r.relay(), &workload{Rows: 5000, RollbackRatio: 0.1, HeaderRatio: 0.1, BigTxnRows: big, Pause: 80 * time.Millisecond, Until: r.untilWait()})

	r.waitTxnOf(big)
	for i := 1; i <= 3; i++ {
		r.terminateWalsender(p, i, fmt.Sprintf("right after a %d-row transaction committed", big))
	}
	for i := 4; i <= 5; i++ {
		time.Sleep(2 * time.Second)
		r.terminateWalsender(p, i, "mid-stream")
	}
	t.Logf("the relay resumed an open transaction after a reconnect %d times", p.logged("resuming transaction after reconnect"))
	r.finishSameProcess(p)
}

// hasTxnOf reports whether a transaction of at least n rows committed.
func (l *ledger) hasTxnOf(n int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, txn := range l.txns {
		if len(txn) >= n {
			return true
		}
	}
	return false
}

// TestFaultTwoRelaysOneSlot starts a second relay on the slot the first
// streams from: it stands by. Writers run; the first relay is SIGKILLed;
// the second must take over within ten seconds and deliver everything.
//
// It runs alone, not in parallel: it bounds the takeover to ten seconds,
// which other tests' load could use up.
func TestFaultTwoRelaysOneSlot(t *testing.T) {
	const takeover = 10 * time.Second
	e := newEnv(t)
	r := newFaultRun(t, e)
	a := r.relay()
	a.waitStreaming(time.Minute)
	b := r.relay()
	if !b.waitLogged("standing by", 1, 30*time.Second) {
		r.tails()
		t.Fatal("relay B did not log that it stands by within 30s")
	}
	r.startWriters(&workload{Rows: 4000, RollbackRatio: 0.1, HeaderRatio: 0.1, MessageRatio: 0.3, Pause: 50 * time.Millisecond, Until: r.untilWait()})

	time.Sleep(3 * time.Second)
	if n := b.logged("streaming"); n != 0 {
		t.Fatalf("relay B streams while relay A holds the slot\n%s", b.logText())
	}
	a.kill()
	killed := time.Now()
	if !r.stillWriting() {
		t.Errorf("the writers finished before relay A was killed; the kill must hit them mid-stream")
	}
	if !b.waitLogged("streaming", 1, takeover) {
		r.tails()
		t.Fatalf("relay B did not take over within %s of relay A's SIGKILL", takeover)
	}
	t.Logf("recovery: relay B streams %s after relay A was killed, and the slot confirmed the WAL written until then %s after the kill",
		ms(time.Since(killed)), ms(e.catchUp(t, killed, 2*time.Minute)))
	r.check()
	if !t.Failed() {
		r.stop(b)
	}
}

// TestFaultReportInDoubtAndPoison feeds ledger.check deliveries involving
// what the fault tests add to the workload: a row whose Commit failed may
// arrive or not, and a poison row holds its index in its transaction's
// positions but must never arrive.
func TestFaultReportInDoubtAndPoison(t *testing.T) {
	var l ledger
	l.init(&workload{Writers: 1})
	msg := func(id string, seq int) schema.Message {
		return schema.Message{ID: id, AggregateType: "order", AggregateID: "order-0000", EventType: "updated",
			Payload: []byte(fmt.Sprintf(`{"seq":%d}`, seq))}
	}
	a0, p0, a1, d0 := msg("a0", 0), msg("p0", -1), msg("a1", 1), msg("d0", 2)
	l.commit(0, []schema.Message{a0, p0, a1}, []bool{false, true, false})
	l.inDoubt([]schema.Message{d0})
	rec := func(m schema.Message, index uint32) *kgo.Record {
		pos := schema.Position{CommitLSN: 0x100, Index: index}
		return &kgo.Record{Topic: "outbox.order", Partition: 1, Key: []byte(m.AggregateID), Value: m.Payload,
			Headers: []kgo.RecordHeader{
				{Key: "id", Value: []byte(m.ID)},
				{Key: "event_type", Value: []byte(m.EventType)},
				{Key: "aggregate_type", Value: []byte(m.AggregateType)},
				{Key: "position", Value: []byte(pos.String())},
			}}
	}
	tests := []struct {
		name string
		recs []*kgo.Record
		want report
	}{
		{"poison row skipped", []*kgo.Record{rec(a0, 0), rec(a1, 2)}, report{Records: 2, Rows: 2}},
		{"row in doubt arrives", []*kgo.Record{rec(a0, 0), rec(a1, 2), rec(d0, 0)}, report{Records: 3, Rows: 2, InDoubt: 1}},
		{"poison row arrives", []*kgo.Record{rec(a0, 0), rec(p0, 1), rec(a1, 2)}, report{Records: 3, Rows: 2, Mismatches: 1}},
		{"poison row holds its index", []*kgo.Record{rec(a0, 0), rec(a1, 1)}, report{Records: 2, Rows: 2, PositionDisorder: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := l.check(tt.recs)
			problems := got.Problems
			got.Problems = nil
			if got.String() != tt.want.String() {
				t.Errorf("check = %s\nwant    %s\n%s", got, &tt.want, strings.Join(problems, "\n"))
			}
		})
	}
}
