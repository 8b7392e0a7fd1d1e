package e2e

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// TestSurvivesKill9 SIGKILLs the relay at random moments while writers
// run, restarting it each time, and checks that nothing committed is lost,
// that each aggregate's first deliveries keep commit order, and that no
// rolled-back row escapes. Duplicates are allowed (at least once) and
// counted.
func TestSurvivesKill9(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.start()
	p.waitStreaming(time.Minute)
	procs := []*proc{p}
	c := newCollector(e.consumer())

	var l ledger
	w := &workload{Rows: 16000, RollbackRatio: 0.1, HeaderRatio: 0.1, BigTxnRows: 6000, Pause: 15 * time.Millisecond}
	start := time.Now()
	done := w.start(t.Context(), e.dsn, &l)
	writing := true
	var werr error
	kills, killsWhileWriting := 0, 0
	for writing || kills < 3 {
		wait := 500*time.Millisecond + rand.N(2500*time.Millisecond)
		if writing {
			select {
			case werr = <-done:
				writing = false
			case <-time.After(wait):
			}
		} else {
			time.Sleep(wait)
		}
		if werr != nil {
			break
		}
		committed, _, _ := l.counts()
		p.kill()
		kills++
		if writing {
			killsWhileWriting++
		}
		t.Logf("kill -9 #%d at %s, %d rows committed so far, writers running: %t",
			kills, time.Since(start).Round(time.Millisecond), committed, writing)
		restarted := time.Now()
		p = e.start()
		procs = append(procs, p)
		p.waitStreaming(time.Minute)
		t.Logf("restarted relay streams after %s", time.Since(restarted).Round(time.Millisecond))
	}
	if writing {
		werr = <-done
	}
	if werr != nil {
		t.Fatalf("workload: %v", werr)
	}
	committed, rolled, txns := l.counts()
	t.Logf("wrote %d committed rows in %d transactions and %d rolled-back rows in %s (seed %d); %d kills, %d while writing",
		committed, txns, rolled, time.Since(start).Round(time.Millisecond), w.Seed, kills, killsWhileWriting)

	rep := l.drain(t, c, 3*time.Minute, 3*time.Second)
	t.Logf("delivered: %s", rep)
	t.Logf("duplicates after %d kills: %d records (%.2f%% of %d rows); rows by number of deliveries: %v",
		kills, rep.Duplicates, 100*float64(rep.Duplicates)/float64(committed), committed, c.deliveries())
	rep.assert(t, true)
	logWarnings(t, procs...)
	if t.Failed() {
		logTails(t, procs)
		return
	}
	if code := p.term(40 * time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0\n%s", code, p.logText())
	}
}

// TestCleanShutdownHasNoDuplicates SIGTERMs the relay twice while writers
// run and restarts it: it must exit 0 within its shutdown timeout, and the
// topic must hold every committed row exactly once.
func TestCleanShutdownHasNoDuplicates(t *testing.T) {
	t.Parallel()
	const shutdown = 15 * time.Second
	e := newEnv(t)
	settings := "OUTBOX_RELAY_SHUTDOWN_TIMEOUT=" + shutdown.String()
	p := e.start(settings)
	p.waitStreaming(time.Minute)
	procs := []*proc{p}
	c := newCollector(e.consumer())

	var l ledger
	w := &workload{Rows: 12000, RollbackRatio: 0.1, HeaderRatio: 0.1, BigTxnRows: 2000, Pause: 20 * time.Millisecond}
	start := time.Now()
	done := w.start(t.Context(), e.dsn, &l)
	var werr error
	writing := true
	for i := range 2 {
		select {
		case werr = <-done:
			writing = false
		case <-time.After(time.Second + rand.N(2*time.Second)):
		}
		if werr != nil {
			break
		}
		committed, _, _ := l.counts()
		stopped := time.Now()
		code := p.term(shutdown + 5*time.Second)
		t.Logf("SIGTERM #%d at %s, %d rows committed so far, writers running: %t: exit %d after %s",
			i+1, time.Since(start).Round(time.Millisecond), committed, writing, code, time.Since(stopped).Round(time.Millisecond))
		if code != 0 {
			t.Errorf("exit code after SIGTERM = %d, want 0\n%s", code, p.logText())
		}
		if !strings.Contains(p.logText(), `"msg":"final position confirmed"`) {
			t.Errorf("relay did not log its final position after SIGTERM\n%s", p.logText())
		}
		p = e.start(settings)
		procs = append(procs, p)
		p.waitStreaming(time.Minute)
	}
	if writing {
		werr = <-done
	}
	if werr != nil {
		t.Fatalf("workload: %v", werr)
	}
	committed, rolled, txns := l.counts()
	t.Logf("wrote %d committed rows in %d transactions and %d rolled-back rows in %s (seed %d)",
		committed, txns, rolled, time.Since(start).Round(time.Millisecond), w.Seed)

	rep := l.drain(t, c, 3*time.Minute, 3*time.Second)
	t.Logf("delivered: %s", rep)
	rep.assert(t, false)
	logWarnings(t, procs...)
	if t.Failed() {
		logTails(t, procs)
		return
	}
	if code := p.term(shutdown + 5*time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0\n%s", code, p.logText())
	}
}

// logTails logs the last lines of each relay's log.
func logTails(t *testing.T, procs []*proc) {
	t.Helper()
	for i, p := range procs {
		lines := strings.Split(p.logText(), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		t.Logf("relay #%d, last lines:\n%s", i+1, strings.Join(lines, "\n"))
	}
}
