// Command demo shows outbox-relay at work on one machine: it starts a
// private PostgreSQL, a broker, the relay binary, a writer of sample events
// (some transactions rolled back) and a consumer that prints what arrives,
// with the relay's lag metrics every few seconds.
//
// -sink picks the broker, as the relay's --sink does: kafka (the default),
// franz-go's kfake, an in-memory Kafka-protocol broker in the demo's
// process; nats, a NATS server with JetStream embedded in the demo's
// process (nats-server), its store in a temporary directory; rabbitmq, a
// node of the installed rabbitmq-server (Debian's rabbitmq-server package)
// with an epmd of its own, run as child processes with their data in a
// temporary directory (sinks/rabbitmq/rabbitmqtest; a start takes 4 to 10
// seconds); or redis, the installed redis-server (Debian's redis-server
// package) run as a child process with appendonly yes and appendfsync
// always in a temporary directory. The child processes are killed when
// the demo ends, and by the kernel if the demo dies (Pdeathsig). Each
// broker listens on a free port of 127.0.0.1. The relay and its setup run
// with OUTBOX_RELAY_SINK and the broker's address in their environment,
// and the consumer reads with the broker's own Go client: franz-go on the
// outbox.* topics, a nats.go ordered JetStream consumer on the OUTBOX
// stream, amqp091-go on a durable queue outbox-relay-demo that the demo
// binds to the exchange outbox with the binding key # once setup has
// declared the exchange and before the writer starts (RabbitMQ drops what
// reaches no queue), acknowledging each message, and go-redis XREAD BLOCK
// on the outbox.* streams.
//
// Ctrl-C (SIGINT, or SIGTERM) stops the writer; once the consumer has every
// committed event (or ten seconds passed) the demo sends SIGTERM to the
// relay, which drains and confirms its position, then stops the consumer,
// the broker and PostgreSQL and removes the temporary state; -duration
// stops it the same way once the writer has run that long. It exits 0 if
// the relay drained and PostgreSQL stopped cleanly, 1 otherwise. Run from a
// terminal, the demo takes the terminal's foreground for itself, so that
// Ctrl-C interrupts it alone and `make demo` exits 0 as well (see
// takeForeground). `make demo` (SINK=nats picks the broker) builds it into
// bin/ and runs:
//
//	bin/outbox-relay-demo -relay bin/outbox-relay -sink kafka
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/schema"
)

// catchUpTimeout bounds the wait, once the writer has stopped, for the
// consumer to receive every committed event before the relay is stopped.
const catchUpTimeout = 10 * time.Second

// relayStopTimeout bounds the relay's drain after SIGTERM.
const relayStopTimeout = 40 * time.Second

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(args []string) (err error) {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	relayBin := fs.String("relay", "bin/outbox-relay", "path of the outbox-relay binary")
	sink := fs.String("sink", sinkKafka, "broker the relay publishes to: kafka (in-process kfake), nats (in-process NATS server with JetStream), rabbitmq (the installed rabbitmq-server) or redis (the installed redis-server)")
	duration := fs.Duration("duration", 0, "stop once the writer has run this long; 0 runs until Ctrl-C")
	rate := fs.Duration("every", 500*time.Millisecond, "time between sample transactions")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !slices.Contains(sinkNames, *sink) {
		return fmt.Errorf("-sink %q: use one of %s", *sink, strings.Join(sinkNames, ", "))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After NotifyContext, so that a Ctrl-C from now on is caught; the
	// deferred hand-back runs last, after PostgreSQL has stopped.
	restore, err := takeForeground(os.Stdin)
	if err != nil {
		return fmt.Errorf("take the terminal's foreground: %w", err)
	}
	defer func() { err = errors.Join(err, restore()) }()
	out := &printer{w: os.Stdout}

	// The broker first: a missing redis-server or rabbitmq-server is
	// reported before PostgreSQL is started for nothing.
	out.say("demo", "starting the %s broker...", *sink)
	interrupted := context.AfterFunc(ctx, func() { out.say("demo", "interrupted; stopping once the broker has started") })
	broker, err := startBroker(*sink, out)
	interrupted()
	if err != nil {
		return fmt.Errorf("start the %s broker: %w", *sink, err)
	}
	defer func() {
		if cerr := broker.close(); cerr != nil {
			out.say("demo", "stop the %s broker: %v", *sink, cerr)
			err = errors.Join(err, fmt.Errorf("stop the %s broker: %w", *sink, cerr))
			return
		}
		out.say("demo", "%s broker stopped and its data removed", *sink)
	}()
	if ctx.Err() != nil {
		return nil // interrupted while the broker started, which takes seconds for RabbitMQ
	}

	out.say("demo", "starting a private PostgreSQL (wal_level=logical)...")
	pg, err := pgtest.Start(ctx, pgtest.Options{})
	if err != nil {
		return fmt.Errorf("start PostgreSQL: %w", err)
	}
	defer func() {
		if serr := pg.Stop(); serr != nil {
			out.say("demo", "stop PostgreSQL: %v", serr)
			err = errors.Join(err, fmt.Errorf("stop PostgreSQL: %w", serr))
			return
		}
		out.say("demo", "PostgreSQL stopped and its data removed")
	}()
	dsn := pg.DSN("")
	out.say("demo", "PostgreSQL at %s", dsn)

	metricsAddr := "127.0.0.1:9479"
	if a := os.Getenv("OUTBOX_RELAY_DEMO_METRICS_ADDR"); a != "" {
		metricsAddr = a
	}
	env := append(os.Environ(),
		"OUTBOX_RELAY_PG_DSN="+dsn,
		"OUTBOX_RELAY_METRICS_ADDR="+metricsAddr,
		"OUTBOX_RELAY_LOG_FORMAT=text",
	)
	env = append(env, broker.env...)
	setup := exec.CommandContext(ctx, *relayBin, "setup")
	setup.Env = env
	b, err := setup.CombinedOutput()
	if err != nil {
		return fmt.Errorf("outbox-relay setup: %w\n%s", err, b)
	}
	out.copyLines("setup", strings.NewReader(string(b)))
	if broker.prepare != nil {
		if err := broker.prepare(); err != nil {
			return fmt.Errorf("prepare the %s broker for the consumer: %w", *sink, err)
		}
	}

	// The relay runs in its own process group so that Ctrl-C reaches it
	// once, from us, after the writer has stopped.
	relay := exec.Command(*relayBin, "run")
	relay.Env = env
	relay.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logs, err := relay.StderrPipe()
	if err != nil {
		return err
	}
	if err := relay.Start(); err != nil {
		return fmt.Errorf("start relay: %w", err)
	}
	out.say("demo", "relay started (pid %d, --sink=%s); metrics at http://%s/metrics", relay.Process.Pid, *sink, metricsAddr)
	relayExited := make(chan struct{})
	var relayErr error // set before relayExited closes
	go func() {
		out.copyLines("relay", logs)
		relayErr = relay.Wait()
		close(relayExited)
	}()

	// The consumer and the lag outlive the writer: they stop once the
	// relay has drained, or when one of them fails.
	var st stats
	reading, rctx := errgroup.WithContext(context.WithoutCancel(ctx))
	rctx, stopReading := context.WithCancel(rctx)
	defer stopReading()
	reading.Go(func() error { return broker.consume(rctx, out, &st) })
	reading.Go(func() error { return showLag(rctx, metricsAddr, out) })

	// The writer stops at Ctrl-C, after -duration, or when the reading
	// fails.
	wctx, stopWriting := context.WithCancel(ctx)
	defer stopWriting()
	defer context.AfterFunc(rctx, stopWriting)()
	if *duration > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(wctx, *duration)
		defer cancel()
	}
	werr := write(wctx, dsn, *rate, out, &st)
	if rctx.Err() != nil || !stopped(werr) {
		_ = relay.Process.Kill()
		<-relayExited
		stopReading()
		return errors.Join(unlessStopped(werr), unlessStopped(reading.Wait()))
	}

	out.say("demo", "stopping: the writer stopped; waiting for the consumer to receive every committed event")
	awaitConsumed(rctx, relayExited, &st, out)
	out.say("demo", "SIGTERM to the relay, which drains and confirms its position")
	_ = relay.Process.Signal(syscall.SIGTERM)
	var failed error
	select {
	case <-relayExited:
		if relayErr != nil {
			out.say("demo", "relay exited: %v", relayErr)
			failed = fmt.Errorf("relay did not stop cleanly: %w", relayErr)
		} else {
			out.say("demo", "relay exited cleanly")
		}
	case <-time.After(relayStopTimeout):
		_ = relay.Process.Kill()
		<-relayExited
		out.say("demo", "relay did not stop in %s; killed", relayStopTimeout)
		failed = fmt.Errorf("relay did not stop within %s of SIGTERM; killed", relayStopTimeout)
	}
	stopReading()
	failed = errors.Join(failed, unlessStopped(reading.Wait()))
	committed, rolledBack, consumed := st.counts()
	out.say("demo", "committed %d events (%d rolled back, never published); consumed %d",
		committed, rolledBack, consumed)
	return failed
}

// stopped reports whether err is a context's, as a part returns when the
// demo stops it.
func stopped(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// unlessStopped returns err unless it is a context's.
func unlessStopped(err error) error {
	if stopped(err) {
		return nil
	}
	return err
}

// awaitConsumed waits until the consumer has as many events as the writer
// committed, for at most catchUpTimeout, and says how it went. It gives up
// early when the relay exits or ctx ends.
func awaitConsumed(ctx context.Context, relayExited <-chan struct{}, st *stats, out *printer) {
	deadline := time.After(catchUpTimeout)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		committed, _, consumed := st.counts()
		if consumed >= committed {
			out.say("demo", "the consumer has all %d committed events", committed)
			return
		}
		select {
		case <-t.C:
			continue
		case <-deadline:
		case <-relayExited:
		case <-ctx.Done():
		}
		out.say("demo", "the consumer has %d of the %d committed events; stopping anyway", consumed, committed)
		return
	}
}

// stats counts the demo's events; its methods are safe for concurrent use.
type stats struct {
	mu                              sync.Mutex
	committed, rolledBack, consumed int
}

// consume counts an event the consumer received.
func (s *stats) consume() {
	s.mu.Lock()
	s.consumed++
	s.mu.Unlock()
}

// counts returns the events committed, rolled back and consumed so far.
func (s *stats) counts() (committed, rolledBack, consumed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.committed, s.rolledBack, s.consumed
}

// write commits a sample transaction every interval; one in five rolls back.
func write(ctx context.Context, dsn string, every time.Duration, out *printer, st *stats) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("writer: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	steps := []string{"created", "paid", "shipped", "delivered"}
	next := map[int]int{}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		order := rand.IntN(5) + 1
		n := rand.IntN(2) + 1
		var msgs []schema.Message
		var names []string
		for i := 0; i < n && next[order] < len(steps); i++ {
			step := steps[next[order]]
			next[order]++
			msgs = append(msgs, schema.Message{
				AggregateType: "order",
				AggregateID:   fmt.Sprintf("order-%d", order),
				EventType:     step,
				Payload:       []byte(fmt.Sprintf(`{"order":%d,"status":%q}`, order, step)),
			})
			names = append(names, step)
		}
		if next[order] == len(steps) {
			next[order] = 0
		}
		if len(msgs) == 0 {
			continue
		}
		rollback := rand.IntN(5) == 0
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if err := schema.Insert(ctx, tx, msgs...); err != nil {
				return err
			}
			if rollback {
				return errRollback
			}
			return nil
		})
		switch {
		case errors.Is(err, errRollback):
			st.mu.Lock()
			st.rolledBack += len(msgs)
			st.mu.Unlock()
			out.say("writer", "ROLLED BACK order-%d %s (the relay must never publish these)", order, strings.Join(names, ", "))
			for range msgs { // the sequence restarts where the rollback left it
				next[order] = (next[order] + len(steps) - 1) % len(steps)
			}
		case err != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("writer: %w", err)
		default:
			st.mu.Lock()
			st.committed += len(msgs)
			st.mu.Unlock()
			out.say("writer", "committed  order-%d %s", order, strings.Join(names, ", "))
		}
	}
}

var errRollback = errors.New("rolled back on purpose")

// showLag prints the relay's lag and counters every three seconds.
func showLag(ctx context.Context, addr string, out *printer) error {
	t := time.NewTicker(3 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		m, err := scrape(ctx, "http://"+addr+"/metrics")
		if err != nil {
			out.say("metrics", "not yet: %v", err)
			continue
		}
		out.say("metrics", "replication_lag_bytes=%s replication_lag_seconds=%s published=%s inflight=%s transactions=%s dlq=%s",
			m["outbox_relay_replication_lag_bytes"], m["outbox_relay_replication_lag_seconds"], m["outbox_relay_events_published_total"],
			m["outbox_relay_inflight_events"], m["outbox_relay_transactions_total"], m["outbox_relay_dlq_events_total"])
	}
}

// scrape reads a Prometheus text page, summing each metric over its labels.
func scrape(ctx context.Context, url string) (map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sums := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
			if j := strings.LastIndexByte(line, ' '); j >= 0 {
				rest = line[j+1:]
			}
		}
		var v float64
		if _, err := fmt.Sscan(rest, &v); err == nil {
			sums[name] += v
		}
	}
	m := map[string]string{}
	for k, v := range sums {
		m[k] = strconv.FormatFloat(v, 'f', -1, 64)
	}
	return m, sc.Err()
}

// printer writes prefixed lines from many goroutines.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *printer) say(who, format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "%s %-8s | %s\n", time.Now().Format("15:04:05.000"), who, fmt.Sprintf(format, args...))
}

func (p *printer) copyLines(who string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		p.say(who, "%s", sc.Text())
	}
}
