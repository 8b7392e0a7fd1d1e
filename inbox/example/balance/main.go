// Command balance is a sample service built on package inbox, small enough
// to read in one sitting and complete enough to copy: it consumes the
// account events another service publishes through outbox-relay and keeps
// a balance per account.
//
// Each event's effect, the balance change and a row in the effects log, is
// written in the PostgreSQL transaction in which the inbox records the
// event's ID; the Kafka offset is committed after that transaction. An
// event delivered again (after a crash of the relay, of this service, or a
// consumer group rebalance) finds its ID recorded and is skipped, so every
// effect is applied exactly once.
//
// The events are outbox rows of aggregate type "account", keyed by the
// account, with a payload like {"delta": -250}; they arrive on the topic
// outbox.account:
//
//	balance --pg-dsn postgres://balance@db/balance --kafka-brokers kafka-1:9092
//
// Every flag is also an environment variable: --pg-dsn is BALANCE_PG_DSN.
// SIGTERM or SIGINT stops it: it finishes the event at hand, commits its
// offsets, leaves the group and exits 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/peterbourgon/ff/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/outbox-relay/outbox-relay/inbox"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "balance:", err)
		os.Exit(1)
	}
}

// config is what the flags set.
type config struct {
	dsn              string
	brokers          string
	group            string
	topic            string
	metricsAddr      string
	sessionTimeout   time.Duration
	rebalanceTimeout time.Duration
	logLevel         slog.Level
}

func parse(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("balance", flag.ContinueOnError)
	fs.StringVar(&c.dsn, "pg-dsn", "", "PostgreSQL DSN of the service's own database (required)")
	fs.StringVar(&c.brokers, "kafka-brokers", "localhost:9092", "comma-separated Kafka seed brokers")
	fs.StringVar(&c.group, "group", "balance", "Kafka consumer group; also the consumer's name in the inbox table")
	fs.StringVar(&c.topic, "topic", "outbox.account", "topic of the account events")
	fs.StringVar(&c.metricsAddr, "metrics-addr", ":9480", "address serving /metrics; empty disables it")
	fs.DurationVar(&c.sessionTimeout, "kafka-session-timeout", 45*time.Second, "how long the group waits for a member that stopped heartbeating")
	fs.DurationVar(&c.rebalanceTimeout, "kafka-rebalance-timeout", time.Minute, "how long the group waits for members to rejoin in a rebalance")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "debug, info, warn or error")
	if err := ff.Parse(fs, args, ff.WithEnvVarPrefix("BALANCE")); err != nil {
		return c, err
	}
	if c.dsn == "" {
		return c, errors.New("--pg-dsn (BALANCE_PG_DSN) is required")
	}
	return c, nil
}

// run owns every goroutine and returns when they have all ended: nil after
// SIGTERM or SIGINT.
func run(ctx context.Context, args []string) error {
	cfg, err := parse(args)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	db, err := pgxpool.New(ctx, cfg.dsn)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer db.Close()
	if err := setup(ctx, db); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	consumer, err := newConsumer(cfg, db, logger, reg)
	if err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return consumer.Run(gctx) })
	if cfg.metricsAddr != "" {
		g.Go(func() error { return serveMetrics(gctx, cfg.metricsAddr, reg, logger) })
	}
	return g.Wait()
}

// newConsumer is the inbox consumer of the account events, calling apply.
func newConsumer(cfg config, db *pgxpool.Pool, logger *slog.Logger, reg prometheus.Registerer) (*inbox.Consumer, error) {
	return inbox.New(inbox.Config{
		Brokers: strings.Split(cfg.brokers, ","),
		Group:   cfg.group,
		Topics:  []string{cfg.topic},
		DB:      db,
		// Events of one account apply in commit order; other accounts of
		// the same partition go on while one account's event is retried.
		OrderBy: inbox.OrderByKey,
		ClientOptions: []kgo.Opt{
			kgo.SessionTimeout(cfg.sessionTimeout),
			kgo.HeartbeatInterval(min(3*time.Second, cfg.sessionTimeout/3)),
			kgo.RebalanceTimeout(cfg.rebalanceTimeout),
		},
	}, apply, logger, reg)
}

// serveMetrics serves reg on addr until ctx ends.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, logger *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for metrics on %s: %w; set --metrics-addr to a free address, or empty to disable", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	logger.Info("serving metrics", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve metrics on %s: %w", addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
