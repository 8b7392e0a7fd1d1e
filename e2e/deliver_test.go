package e2e

import (
	"bufio"
	"bytes"
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDeliversCommittedRowsInOrder writes a concurrent workload with
// rollbacks and one big transaction while one relay runs, and checks
// every record against what was committed: each committed row exactly
// once, nothing rolled back, per-aggregate commit order on one partition,
// the record mapping, and positions in commit order. kcat (librdkafka)
// reads one topic back independently.
func TestDeliversCommittedRowsInOrder(t *testing.T) {
	t.Parallel()
	kcat := requireKcat(t)
	e := newEnv(t)
	p := e.start()
	p.waitStreaming(time.Minute)
	c := newCollector(e.consumer())

	var l ledger
	w := &workload{Rows: 20000, RollbackRatio: 0.1, HeaderRatio: 0.2, BigTxnRows: 20000}
	start := time.Now()
	if err := w.run(t.Context(), e.dsn, &l); err != nil {
		t.Fatalf("workload: %v", err)
	}
	committed, rolled, txns := l.counts()
	t.Logf("wrote %d committed rows in %d transactions and %d rolled-back rows in %s (seed %d)",
		committed, txns, rolled, time.Since(start).Round(time.Millisecond), w.Seed)
	if committed < w.Rows+w.BigTxnRows || rolled == 0 {
		t.Fatalf("workload committed %d rows and rolled back %d; want at least %d and some", committed, rolled, w.Rows+w.BigTxnRows)
	}

	rep := l.drain(t, c, 3*time.Minute, 2*time.Second)
	t.Logf("delivered: %s", rep)
	rep.assert(t, false)
	logWarnings(t, p)
	if t.Failed() {
		t.Logf("relay log:\n%s", p.logText())
		return
	}

	// An independent client sees the same records of one topic.
	const topic = "outbox.order"
	var want []string
	for _, r := range c.recs {
		if r.Topic == topic {
			want = append(want, string(r.Key)+" "+header(r, "id"))
		}
	}
	got := kcatRead(t, kcat, e.brokers, topic)
	slices.Sort(want)
	slices.Sort(got)
	if len(got) != len(want) {
		t.Errorf("kcat read %d records of %s, franz-go %d", len(got), topic, len(want))
	} else if !slices.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("kcat and franz-go disagree on %s: first difference, sorted (key id): kcat %q, franz-go %q", topic, got[i], want[i])
				break
			}
		}
	} else {
		t.Logf("kcat read the same %d records (keys and ids) of %s", len(got), topic)
	}

	if code := p.term(40 * time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0\n%s", code, p.logText())
	}
}

// requireKcat returns the path of kcat, failing the test without it.
func requireKcat(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("kcat")
	if err != nil {
		if testing.Short() {
			t.Skip("kcat not installed")
		}
		t.Fatal("kcat, an independent Kafka client, is not on PATH: install kcat (apt-get install kcat)")
	}
	return path
}

// kcatRead reads topic from the start to its end with kcat and returns
// "key id" for each record.
func kcatRead(t *testing.T, kcat, brokers, topic string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcat, "-b", brokers, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
		"-f", `%k\t%h\n`)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat -C -t %s: %v\n%s", topic, err, stderr.String())
	}
	var recs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		key, headers, ok := strings.Cut(sc.Text(), "\t")
		if !ok {
			t.Fatalf("kcat printed %q, want key<TAB>headers", sc.Text())
		}
		id := ""
		for h := range strings.SplitSeq(headers, ",") {
			if v, ok := strings.CutPrefix(h, "id="); ok {
				id = v
				break
			}
		}
		recs = append(recs, key+" "+id)
	}
	return recs
}

// logWarnings logs the relay's warnings and errors.
func logWarnings(t *testing.T, procs ...*proc) {
	t.Helper()
	n := 0
	for _, p := range procs {
		for line := range strings.SplitSeq(p.logText(), "\n") {
			if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
				if n++; n <= 20 {
					t.Logf("relay: %s", line)
				}
			}
		}
	}
	if n > 20 {
		t.Logf("relay: %d more warnings and errors", n-20)
	}
}
