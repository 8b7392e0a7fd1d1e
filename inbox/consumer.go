package inbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/outbox-relay/outbox-relay/schema"
)

// pollRecords bounds the records one poll hands to the partitions.
const pollRecords = 1000

// Consumer reads Kafka records in a consumer group and applies each once,
// through a Handler, in a PostgreSQL transaction that records the event in
// the inbox table. New makes one, Run runs it.
type Consumer struct {
	cfg       Config
	handler   Handler
	logger    *slog.Logger
	metrics   *metrics
	table     schema.Table
	insertSQL string
	ran       atomic.Bool
	hooks     hooks
}

// hooks are test probes; nil fields do nothing.
type hooks struct {
	onAttempt      func(Event)
	onApplied      func(Event)
	onDeadLettered func(*kgo.Record)
	// crash makes Run return without committing or leaving the group, as
	// if the process were killed.
	crash bool
}

func (h *hooks) attempt(ev Event) {
	if h.onAttempt != nil {
		h.onAttempt(ev)
	}
}

func (h *hooks) applied(ev Event) {
	if h.onApplied != nil {
		h.onApplied(ev)
	}
}

func (h *hooks) deadLettered(rec *kgo.Record) {
	if h.onDeadLettered != nil {
		h.onDeadLettered(rec)
	}
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
	return &Consumer{cfg: cfg, handler: h, logger: logger, metrics: m, table: t, insertSQL: insertStatement(t.Quoted())}, nil
}

// Run joins the consumer group and applies records until ctx ends, when it
// stops (see the package documentation: running handler calls get
// Config.ShutdownTimeout, finished records are committed, the group is
// left) and returns nil; or until it cannot go on (the inbox table is
// missing, the Kafka client fails for good), when it stops the same way and
// returns the error. It owns every goroutine it starts and returns after
// all have. Run may be called once.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.ran.CompareAndSwap(false, true) {
		return errors.New("inbox: Run called twice")
	}
	if err := c.checkTable(ctx); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s := &session{c: c, base: ctx, parts: make(map[topicPartition]*partition)}
	var fatalOnce sync.Once
	var fatal error
	s.fail = func(err error) {
		fatalOnce.Do(func() { fatal = err; cancel(err) })
	}

	opts := []kgo.Opt{
		kgo.ConsumerGroup(c.cfg.Group),
		kgo.ConsumeTopics(c.cfg.Topics...),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsRevoked(s.revoked),
		kgo.OnPartitionsLost(s.lost),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.WithLogger(kslog.New(c.logger)),
	}
	if len(c.cfg.Brokers) > 0 {
		opts = append(opts, kgo.SeedBrokers(c.cfg.Brokers...))
	}
	cl, err := kgo.NewClient(append(opts, c.cfg.ClientOptions...)...)
	if err != nil {
		return fmt.Errorf("inbox: kafka client for group %q: %w", c.cfg.Group, err)
	}
	s.cl = cl
	c.createDeadLetterTopic(runCtx, cl)
	c.logger.Info("consuming", "topics", c.cfg.Topics, "order_by", c.cfg.OrderBy.String())

	var wg sync.WaitGroup
	wg.Go(func() { c.commitLoop(runCtx, s) })
	if c.cfg.Retention > 0 {
		wg.Go(func() { c.pruneLoop(runCtx) })
	}
	c.poll(runCtx, s)
	cancel(nil)
	wg.Wait()

	if c.hooks.crash {
		for _, p := range s.take(nil) {
			p.halt()
			p.abandon()
			p.lanes.Wait()
			p.forget()
		}
		cl.Close()
		return fatal
	}
	c.logger.Info("draining", "shutdown_timeout", c.cfg.ShutdownTimeout)
	parts := s.take(nil)
	s.stop(parts, c.cfg.ShutdownTimeout)
	s.commitLocked(parts)
	cl.Close() // leaves the group; the revoke callback finds nothing left
	c.logger.Info("stopped")
	return fatal
}

// poll hands fetched records to their partitions until ctx ends or the
// client is closed. Each poll is followed by AllowRebalance: the rebalance
// callbacks run only between dispatches.
func (c *Consumer) poll(ctx context.Context, s *session) {
	for {
		fetches := s.cl.PollRecords(ctx, pollRecords)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			s.cl.AllowRebalance()
			return
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.Canceled) {
				c.logger.Warn("fetch failed", "topic", topic, "partition", partition, "err", err)
			}
		})
		fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
			if len(ftp.Records) == 0 {
				return
			}
			s.partition(topicPartition{ftp.Topic, ftp.Partition}).dispatch(ftp.Records, ftp.HighWatermark)
		})
		s.cl.AllowRebalance()
	}
}

// commitLoop commits finished offsets every Config.CommitInterval until ctx
// ends.
func (c *Consumer) commitLoop(ctx context.Context, s *session) {
	t := time.NewTicker(c.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.commit()
		}
	}
}

// checkTable fails with advice when the inbox table does not exist.
func (c *Consumer) checkTable(ctx context.Context) error {
	var exists bool
	if err := c.cfg.DB.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", c.table.Quoted()).Scan(&exists); err != nil {
		return fmt.Errorf("inbox: check inbox table %s: %w", c.table, err)
	}
	if !exists {
		return tableError(c.table.String(), errors.New("does not exist"))
	}
	return nil
}
