package e2e

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/sinktest"
)

// The sink tests run the relay binary against each broker other than Kafka,
// a real server started by the test, with the fault workload: writers with
// rolled-back transactions, the relay killed, the broker restarted, the
// relay stopped by SIGTERM. What the broker holds is read with an
// independent client of it (the sink's test package) and checked against
// the ledger like Kafka's records: each committed row once or more, none
// rolled back, each aggregate's first copies in commit order.

// sinkBroker is a broker of one sink, started for one test.
type sinkBroker struct {
	// env is the relay's environment for the sink: OUTBOX_RELAY_SINK and
	// the broker's address.
	env []string
	// read returns every event message the broker holds.
	read func(t *testing.T) []sinktest.Message
	// dest is the destination m must have been stored at, from its
	// aggregate type, event type and key.
	dest func(m sinktest.Message) string
	// readDeadLetters returns every dead letter the broker holds.
	readDeadLetters func(t *testing.T) []sinktest.Message
	// maxBytes is the relay's setting of the sink's largest message.
	maxBytes string
	// stop stops the broker, keeping what it stored; start starts it
	// again at the same address.
	stop, start func(t testing.TB)
	// dropped, when set, names the relay's counter of re-sends the broker
	// dropped as duplicates: none may then arrive, even after kill -9.
	dropped string
}

// sinkCase names a sink and starts its broker.
type sinkCase struct {
	name  string
	start func(t *testing.T) *sinkBroker
}

// sinkFetcher is a fetcher of what a broker other than Kafka holds: each
// poll reads everything and returns what is new, per destination, as Kafka
// records. A record's topic is outbox.<aggregate type>, as on Kafka, and
// its partition stands for its key: these brokers keep each aggregate's
// order, not one across aggregates.
type sinkFetcher struct {
	t    *testing.T
	b    *sinkBroker
	seen map[string]int // per destination, messages returned

	mu       sync.Mutex
	misplace []string // messages stored at the wrong destination
}

func newSinkFetcher(t *testing.T, b *sinkBroker) *sinkFetcher {
	return &sinkFetcher{t: t, b: b, seen: make(map[string]int)}
}

func (f *sinkFetcher) poll(ctx context.Context, d time.Duration) ([]*kgo.Record, error) {
	deadline := time.Now().Add(d)
	for {
		var recs []*kgo.Record
		count := make(map[string]int)
		for _, m := range f.b.read(f.t) {
			count[m.Destination]++
			if count[m.Destination] <= f.seen[m.Destination] {
				continue
			}
			recs = append(recs, f.record(m, count[m.Destination]))
		}
		for dest, n := range count {
			f.seen[dest] = max(f.seen[dest], n)
		}
		if len(recs) > 0 || time.Now().After(deadline) {
			return recs, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(min(200*time.Millisecond, time.Until(deadline))):
		}
	}
}

// record returns m as the Kafka record the ledger checks, the n-th of its
// destination.
func (f *sinkFetcher) record(m sinktest.Message, n int) *kgo.Record {
	typ, _ := m.Header(delivery.HeaderAggregateType)
	if want := f.b.dest(m); m.Destination != want {
		f.mu.Lock()
		f.misplace = append(f.misplace, m.Destination+" (want "+want+")")
		f.mu.Unlock()
	}
	h := fnv.New32a()
	h.Write([]byte(m.Key))
	rec := &kgo.Record{
		Topic:     "outbox." + typ,
		Partition: int32(h.Sum32() & 0x7fffffff),
		Offset:    int64(n - 1),
		Key:       []byte(m.Key),
		Value:     m.Payload,
	}
	for _, h := range m.Headers {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	return rec
}

// checkPlaces fails t if a message was stored at the wrong destination.
func (f *sinkFetcher) checkPlaces(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.misplace) > 0 {
		t.Errorf("%d messages at the wrong destination, such as %s", len(f.misplace), strings.Join(f.misplace[:min(5, len(f.misplace))], ", "))
	}
}

// newSinkRun returns a fault run of the relay on e publishing to b.
func newSinkRun(t *testing.T, e *env, b *sinkBroker) (*faultRun, *sinkFetcher) {
	f := newSinkFetcher(t, b)
	r := &faultRun{t: t, e: e, c: newCollector(f), env: b.env}
	return r, f
}

// sinkWorkload is the sink tests' workload: eight writers, a fifth of the
// transactions rolled back, a tenth of the rows with headers, a third of
// the events as logical decoding messages.
func sinkWorkload(rows int) *workload {
	return &workload{Rows: rows, RollbackRatio: 0.2, HeaderRatio: 0.1, MessageRatio: 0.3, Pause: 30 * time.Millisecond}
}

// TestSinks runs each broker's checks one after another, and the brokers
// beside each other and beside the package's other parallel tests: each
// has its own database, broker and relays.
func TestSinks(t *testing.T) {
	t.Parallel()
	for _, sc := range sinkCases {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			t.Run("Kill9", func(t *testing.T) { testSinkKill9(t, sc) })
			t.Run("BrokerRestart", func(t *testing.T) { testSinkBrokerRestart(t, sc) })
			t.Run("CleanStop", func(t *testing.T) { testSinkCleanStop(t, sc) })
			t.Run("Poison", func(t *testing.T) { testSinkPoison(t, sc) })
		})
	}
}

// sinkEnv is newEnv with a slot of sc's own, so that the brokers' tests
// may run side by side.
func sinkEnv(t *testing.T, sc sinkCase) *env {
	return newEnvSlot(t, pgtest.NewDatabase(t), "sink_"+sc.name)
}

// testSinkKill9 SIGKILLs the relay three times or more while eight writers
// run: nothing is lost, and on a broker that drops re-sends nothing is
// duplicated either.
func testSinkKill9(t *testing.T, sc sinkCase) {
	e := sinkEnv(t, sc)
	b := sc.start(t)
	r, f := newSinkRun(t, e, b)
	dropped := make(map[*proc]float64) // per relay, its count when last read
	if b.dropped != "" {
		r.beforeKill = func(p *proc) {
			p.mu.Lock()
			addr := p.metrics
			p.mu.Unlock()
			if mfs, err := scrapeQuiet(addr); addr != "" && err == nil {
				dropped[p] = max(0, value(mfs, b.dropped, nil))
			}
		}
	}
	p := r.relay()
	p.waitStreaming(time.Minute)
	r.startWriters(sinkWorkload(2500))
	rep := r.kill9Repeatedly(p, 3)
	f.checkPlaces(t)
	if b.dropped == "" {
		return
	}
	var sum float64
	for _, n := range dropped {
		sum += n
	}
	t.Logf("the broker dropped %.0f events the relays sent again after a kill (%s, read from each relay just before its kill)", sum, b.dropped)
	if rep.Duplicates > 0 {
		t.Errorf("%d duplicates reached the broker, which should have dropped the relay's re-sends", rep.Duplicates)
	}
	if sum == 0 {
		t.Error("no relay sent an event again after a kill: the duplicate window went untested")
	}
}

// testSinkBrokerRestart stops the broker for three seconds and starts it
// again while the writers run: the same relay process rides it out and
// delivers everything.
func testSinkBrokerRestart(t *testing.T, sc sinkCase) {
	e := sinkEnv(t, sc)
	b := sc.start(t)
	r, f := newSinkRun(t, e, b)
	p := r.relay()
	p.waitStreaming(time.Minute)
	r.startWriters(sinkWorkload(2500))
	time.Sleep(2 * time.Second)
	down := time.Now()
	b.stop(t)
	time.Sleep(3 * time.Second)
	b.start(t)
	t.Logf("broker down for %s", ms(time.Since(down)))
	r.waitWriters()
	r.finishSameProcess(p)
	f.checkPlaces(t)
}

// testSinkCleanStop SIGTERMs the relay twice while the writers run, and
// starts it again: no event arrives twice.
func testSinkCleanStop(t *testing.T, sc sinkCase) {
	e := sinkEnv(t, sc)
	b := sc.start(t)
	r, f := newSinkRun(t, e, b)
	p := r.relay()
	p.waitStreaming(time.Minute)
	r.startWriters(sinkWorkload(2000))
	for i := range 2 {
		time.Sleep(time.Second + time.Duration(i)*500*time.Millisecond)
		r.stop(p)
		p = r.relay()
		p.waitStreaming(time.Minute)
	}
	r.waitWriters()
	rep := r.check()
	if rep.Duplicates > 0 {
		t.Errorf("%d duplicates after clean stops, want none", rep.Duplicates)
	}
	r.stop(p)
	f.checkPlaces(t)
}

// TestSinkUnreachableBroker starts the relay against each broker at an
// address where nothing listens, with a password in the URL and another
// in a file: it must exit 1 within 15 s, say which server did not answer
// and what to check, and print neither password.
func TestSinkUnreachableBroker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	secretFile := t.TempDir() + "/password"
	if err := os.WriteFile(secretFile, []byte("filesecret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	for _, tt := range []struct {
		sink, urlFlag, url, fileFlag, want string
	}{
		{"nats", "--nats-url", "nats://relay:urlsecret@" + addr, "", "no NATS server answered at nats://relay:xxxxx@" + addr},
		{"rabbitmq", "--rabbitmq-url", "amqp://relay:urlsecret@" + addr + "/", "--rabbitmq-password-file", "no RabbitMQ server answered at"},
		{"redis", "--redis-url", "redis://relay:urlsecret@" + addr + "/0", "--redis-password-file", "no Redis server answered at"},
	} {
		t.Run(tt.sink, func(t *testing.T) {
			args := []string{"run", "--sink", tt.sink, tt.urlFlag, tt.url}
			if tt.fileFlag != "" {
				args = append(args, tt.fileFlag, secretFile)
			}
			start := time.Now()
			r := runCmd(t, e.command(t.Context(), args...), 30*time.Second)
			took := time.Since(start)
			out := r.stdout + r.stderr
			if r.code != 1 {
				t.Errorf("exit %d, want 1\n%s", r.code, out)
			}
			if took > 15*time.Second {
				t.Errorf("exited after %s, want within 15s", took.Round(time.Millisecond))
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("output lacks %q:\n%s", tt.want, out)
			}
			for _, secret := range []string{"urlsecret", "filesecret"} {
				if strings.Contains(out, secret) {
					t.Errorf("output shows the password %q:\n%s", secret, out)
				}
			}
		})
	}
}

// testSinkPoison writes rows the broker can never take (no aggregate ID, a
// payload over the sink's limit) among the writers' transactions: each
// committed one lands in the dead-letter destination, with its reason, and
// nowhere else; everything else is delivered in order.
func testSinkPoison(t *testing.T, sc sinkCase) {
	e := sinkEnv(t, sc)
	b := sc.start(t)
	if b.readDeadLetters == nil || b.maxBytes == "" {
		t.Fatalf("sink %s: the test case lacks a dead-letter reader or its size setting", sc.name)
	}
	r, _ := newSinkRun(t, e, b)
	r.env = append(slices.Clone(r.env), b.maxBytes+"="+strconv.Itoa(poisonMaxBytes))
	p := r.relay()
	p.waitStreaming(time.Minute)
	var made atomic.Int64
	kinds := []string{poisonAggregateID, poisonSize}
	w := sinkWorkload(1500)
	w.Poison = func(rng *rand.Rand, typ, aggregateID string, _ bool) *schema.Message {
		if rng.Float64() >= 0.05 {
			return nil
		}
		return poisonRow(kinds[made.Add(1)%int64(len(kinds))], typ, aggregateID)
	}
	r.startWriters(w)
	r.check()
	want := make(map[string]string) // poison id -> reason
	for _, row := range r.l.poisonRows() {
		reason := delivery.ReasonSize
		if row.msg.AggregateID == "" {
			reason = delivery.ReasonAggregateID
		}
		want[row.msg.ID] = reason
	}
	if len(want) == 0 {
		t.Fatal("the writers committed no poison row: run again")
	}
	var got map[string][]sinktest.Message
	eventually(t, time.Minute, "every poison row dead-lettered", func() (bool, string) {
		got = make(map[string][]sinktest.Message)
		for _, m := range b.readDeadLetters(t) {
			id := field(m, delivery.HeaderID)
			got[id] = append(got[id], m)
		}
		missing := 0
		for id := range want {
			if len(got[id]) == 0 {
				missing++
			}
		}
		return missing == 0, fmt.Sprintf("%d of %d missing", missing, len(want))
	})
	for id, ms := range got {
		reason, ok := want[id]
		if !ok {
			t.Errorf("dead letter %s is no poison row the writers committed", id)
			continue
		}
		if r := field(ms[0], delivery.HeaderDLQReason); r != reason {
			t.Errorf("dead letter %s: reason %q, want %q", id, r, reason)
		}
	}
	t.Logf("%d poison rows committed, each dead-lettered (%d dead letters)", len(want), len(got))
	r.stop(p)
}

// TestSinkReadiness: /readyz follows the broker of a sink other than Kafka:
// ready while NATS answers, not ready, naming it, once it has not answered
// for three health intervals, ready again once it is back; /healthz stays
// 200 throughout, since the relay itself is fine.
func TestSinkReadiness(t *testing.T) {
	t.Parallel() // beside TestSinks, with a slot of its own
	e := newEnvSlot(t, pgtest.NewDatabase(t), "sink_readiness")
	b := startNATS(t)
	r, _ := newSinkRun(t, e, b)
	p := r.relay()
	p.waitStreaming(time.Minute)
	addr := p.metricsAddr(t)
	ready := func() (bool, string) {
		code, body := get(addr, "/readyz")
		return code == http.StatusOK, fmt.Sprint(code, " ", body)
	}
	eventually(t, 30*time.Second, "/readyz ready", ready)
	b.stop(t)
	eventually(t, time.Minute, "/readyz fails, naming the broker, while NATS is down", func() (bool, string) {
		ok, why := ready()
		return !ok && strings.Contains(why, "no nats broker answers"), why
	})
	if code, body := get(addr, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %q while NATS is down, want 200", code, body)
	}
	b.start(t)
	eventually(t, time.Minute, "/readyz recovers", ready)
	r.stop(p)
}
