package inbox

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/schema"
)

// Consumer reads Kafka records in a consumer group and applies each once,
// through a Handler, in a PostgreSQL transaction that records the event in
// the inbox table. New makes one, Run runs it.
type Consumer struct {
	cfg     Config
	handler Handler
	logger  *slog.Logger
	metrics *metrics
	table   schema.Table
}

// New returns a Consumer of cfg's topics calling h, after filling cfg's
// defaults and validating it. It starts nothing and connects to nothing. A
// nil logger discards; a nil reg registers no metrics.
func New(cfg Config, h Handler, logger *slog.Logger, reg prometheus.Registerer) (*Consumer, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("inbox: nil Handler")
	}
	t, err := parseTable(cfg.Table)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg, cfg.Name)
	if err != nil {
		return nil, err
	}
	logger = logger.With("component", "inbox", "consumer", cfg.Name, "group", cfg.Group)
	return &Consumer{cfg: cfg, handler: h, logger: logger, metrics: m, table: t}, nil
}

// Run joins the consumer group and applies records until ctx ends, when it
// stops (see the package documentation: running handler calls get
// Config.ShutdownTimeout, finished records are committed, the group is
// left) and returns nil; or until it cannot go on (the inbox table is
// missing, the Kafka client fails for good), when it stops the same way and
// returns the error. It owns every goroutine it starts and returns after
// all have. Run may be called once.
func (c *Consumer) Run(ctx context.Context) error {
	return errors.New("inbox: Run not implemented")
}

// Prune deletes this consumer's inbox rows processed more than olderThan
// ago, Config.PruneBatch rows per statement, and returns how many it
// deleted. It is safe to call while Run runs. olderThan must exceed how
// long a duplicate can still arrive; see the package documentation.
func (c *Consumer) Prune(ctx context.Context, olderThan time.Duration) (int64, error) {
	return 0, errors.New("inbox: Prune not implemented")
}
