// Command demo shows outbox-relay at work on one machine: it starts a
// private PostgreSQL, an in-process Kafka-protocol broker, the relay binary,
// a writer of sample events (some transactions rolled back) and a consumer
// that prints what arrives, with the relay's lag metrics every few seconds.
// Ctrl-C (SIGINT, or SIGTERM) stops everything and removes the temporary
// state; the demo then exits 0 if the relay drained and PostgreSQL stopped
// cleanly, 1 otherwise. Run from a terminal, the demo takes the terminal's
// foreground for itself, so that Ctrl-C interrupts it alone and `make demo`
// exits 0 as well (see takeForeground). `make demo` builds it into bin/ and
// runs:
//
//	bin/outbox-relay-demo -relay bin/outbox-relay
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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/schema"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(args []string) (err error) {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	relayBin := fs.String("relay", "bin/outbox-relay", "path of the outbox-relay binary")
	duration := fs.Duration("duration", 0, "stop after this long; 0 runs until Ctrl-C")
	rate := fs.Duration("every", 500*time.Millisecond, "time between sample transactions")
	if err := fs.Parse(args); err != nil {
		return err
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
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	out := &printer{w: os.Stdout}

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

	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3))
	if err != nil {
		return fmt.Errorf("start broker: %w", err)
	}
	defer broker.Close()
	brokers := strings.Join(broker.ListenAddrs(), ",")
	out.say("demo", "Kafka-protocol broker (in-process) at %s", brokers)

	metricsAddr := "127.0.0.1:9479"
	if a := os.Getenv("OUTBOX_RELAY_DEMO_METRICS_ADDR"); a != "" {
		metricsAddr = a
	}
	env := append(os.Environ(),
		"OUTBOX_RELAY_PG_DSN="+dsn,
		"OUTBOX_RELAY_KAFKA_BROKERS="+brokers,
		"OUTBOX_RELAY_METRICS_ADDR="+metricsAddr,
		"OUTBOX_RELAY_LOG_FORMAT=text",
	)
	setup := exec.CommandContext(ctx, *relayBin, "setup")
	setup.Env = env
	b, err := setup.CombinedOutput()
	if err != nil {
		return fmt.Errorf("outbox-relay setup: %w\n%s", err, b)
	}
	out.copyLines("setup", strings.NewReader(string(b)))

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
	out.say("demo", "relay started (pid %d); metrics at http://%s/metrics", relay.Process.Pid, metricsAddr)
	relayDone := make(chan error, 1)
	go func() {
		out.copyLines("relay", logs)
		relayDone <- relay.Wait()
	}()

	var st stats
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return write(gctx, dsn, *rate, out, &st) })
	g.Go(func() error { return consume(gctx, broker.ListenAddrs(), out, &st) })
	g.Go(func() error { return showLag(gctx, metricsAddr, out) })
	err = g.Wait()
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		_ = relay.Process.Kill()
		<-relayDone
		return err
	}

	out.say("demo", "stopping: SIGTERM to the relay, which drains and confirms its position")
	_ = relay.Process.Signal(syscall.SIGTERM)
	var relayErr error
	select {
	case err := <-relayDone:
		if err != nil {
			out.say("demo", "relay exited: %v", err)
			relayErr = fmt.Errorf("relay did not stop cleanly: %w", err)
		} else {
			out.say("demo", "relay exited cleanly")
		}
	case <-time.After(40 * time.Second):
		_ = relay.Process.Kill()
		<-relayDone
		out.say("demo", "relay did not stop in 40s; killed")
		relayErr = errors.New("relay did not stop within 40s of SIGTERM; killed")
	}
	st.mu.Lock()
	out.say("demo", "committed %d events (%d rolled back, never published); consumed %d",
		st.committed, st.rolledBack, st.consumed)
	st.mu.Unlock()
	return relayErr
}

type stats struct {
	mu                              sync.Mutex
	committed, rolledBack, consumed int
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

// consume prints every record that reaches the broker.
func consume(ctx context.Context, brokers []string, out *printer, st *stats) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeRegex(),
		kgo.ConsumeTopics(`^outbox\..*`),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.MetadataMinAge(250*time.Millisecond),
		kgo.MetadataMaxAge(time.Second),
	)
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fs.EachRecord(func(r *kgo.Record) {
			var et, pos string
			for _, h := range r.Headers {
				switch h.Key {
				case "event_type":
					et = string(h.Value)
				case "position":
					pos = string(h.Value)
				}
			}
			st.mu.Lock()
			st.consumed++
			st.mu.Unlock()
			out.say("consumer", "%s p%d key=%s %-9s position=%s value=%s", r.Topic, r.Partition, r.Key, et, pos, r.Value)
		})
	}
}

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
