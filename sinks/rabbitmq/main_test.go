package rabbitmq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/rabbitmq/rabbitmqtest"
)

// node is the package's RabbitMQ node, shared by its integration tests,
// which run one after another; nil under -short.
var node *rabbitmqtest.Server

// TestMain starts one node for the package (about 6 to 9 seconds on a
// loaded 2-core machine, with the TLS listener and the consistent-hash
// plugin the tests use), runs the tests, stops it, and checks that no
// goroutine is left.
func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	flag.Parse()
	if !testing.Short() {
		s, err := rabbitmqtest.New(rabbitmqtest.Options{TLS: true, Plugins: []string{"rabbitmq_consistent_hash_exchange"}})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if testing.Verbose() {
			fmt.Fprintf(os.Stderr, "rabbitmqtest: node %s started in %s\n", s.Node, s.StartTime().Round(time.Millisecond))
		}
		node = s
	}
	code := m.Run()
	if node != nil {
		if err := node.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = max(code, 1)
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			return 1
		}
	}
	return code
}

// serverFor returns the package's node, skipping t under -short.
func serverFor(t testing.TB) *rabbitmqtest.Server {
	t.Helper()
	if node == nil {
		t.Skip("needs RabbitMQ (Debian's rabbitmq-server); skipped by -short")
	}
	return node
}

// unique returns prefix with a random suffix, so that each test has
// exchanges and queues of its own on the shared node.
func unique(prefix string) string {
	var raw [4]byte
	_, _ = rand.Read(raw[:])
	return prefix + "-" + hex.EncodeToString(raw[:])
}

// testConfig returns a Config for the package's node with an exchange, a
// routing key per aggregate type and a dead-letter queue of t's own, and a
// short backoff.
func testConfig(t testing.TB) Config {
	t.Helper()
	return Config{
		URL:             serverFor(t).URL,
		Exchange:        unique("ex"),
		RoutingKey:      "{aggregate_type}.{event_type}",
		DeadLetterQueue: unique("dlq"),
		Delivery:        testDelivery,
	}
}

// testDelivery keeps the backoff short, so that tests of outages wait
// little once the node is back.
var testDelivery = delivery.Config{RetryMin: 50 * time.Millisecond, RetryMax: time.Second}

// logs is a slog handler that keeps every record, and writes it to the
// test's output.
type logs struct {
	slog.Handler
	mu      *sync.Mutex
	records *[]slog.Record
}

// newLogs returns a logger writing to t's output, and what it logged.
func newLogs(t testing.TB) (*slog.Logger, *logs) {
	l := &logs{
		Handler: slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}),
		mu:      new(sync.Mutex),
		records: new([]slog.Record),
	}
	return slog.New(l), l
}

func (l *logs) Handle(ctx context.Context, r slog.Record) error {
	l.mu.Lock()
	*l.records = append(*l.records, r.Clone())
	l.mu.Unlock()
	return l.Handler.Handle(ctx, r)
}

func (l *logs) WithAttrs(as []slog.Attr) slog.Handler {
	return &logs{Handler: l.Handler.WithAttrs(as), mu: l.mu, records: l.records}
}

func (l *logs) WithGroup(name string) slog.Handler {
	return &logs{Handler: l.Handler.WithGroup(name), mu: l.mu, records: l.records}
}

// at returns the messages logged at level.
func (l *logs) at(level slog.Level) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range *l.records {
		if r.Level == level && !slices.Contains(out, r.Message) {
			out = append(out, r.Message)
		}
	}
	return out
}
