package redis

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	goredis "github.com/redis/go-redis/v9"
)

// broker is the delivery.Broker of Redis streams: a mapper, and a go-redis
// client that connects on first use.
type broker struct {
	*mapper
	client *goredis.Client
	url    string // Config.URL with its password redacted
	log    *slog.Logger
	wg     sync.WaitGroup // the pipelines, which may outlive their Send

	checked  atomic.Bool // the durability settings were reported
	mu       sync.Mutex
	reported settings // the settings last reported
}

// newBroker returns the broker for cfg, which must have its defaults and be
// valid. It starts nothing and connects nowhere.
func newBroker(cfg Config, logger *slog.Logger) (*broker, error) {
	m, err := newMapper(cfg)
	if err != nil {
		return nil, err
	}
	opt, err := cfg.options()
	if err != nil {
		return nil, err
	}
	b := &broker{mapper: m, url: cfg.redactedURL(), log: logger}
	opt.OnConnect = b.onConnect
	b.client = goredis.NewClient(opt)
	return b, nil
}

// Send adds each message's entry with one pipeline of XADD commands, on one
// connection and in one round trip, and sets errs[i] when msgs[i]'s XADD
// did not return an entry ID: the ID is Redis's acknowledgement, sent once
// the entry is in memory and, with appendonly yes, written to the
// append-only file (see the package doc for what reaches the disk). Commands
// of a pipeline run in order, so a connection lost mid-way fails the
// messages whose replies were not read, some of which Redis may have added:
// they are sent again, and their entries are then stored twice.
//
// When ctx ends, Send returns at once, failing every message; the pipeline
// goes on until its replies or its timeouts (Config.ReadTimeout), or until
// Close ends it by closing the connections, and Close waits for it.
func (b *broker) Send(ctx context.Context, msgs []message, errs []error) {
	// The pipeline outlives Send when ctx ends, and the caller reuses msgs:
	// the commands hold the arguments, not msgs.
	cmds := make([]*goredis.StringCmd, len(msgs))
	pipe := b.client.Pipeline()
	for i := range msgs {
		cmds[i] = goredis.NewStringCmd(ctx, msgs[i].args...)
		_ = pipe.Process(ctx, cmds[i]) // only queues it
	}
	done := make(chan struct{})
	b.wg.Go(func() {
		defer close(done)
		_, _ = pipe.Exec(ctx) // each command holds its outcome
	})
	select {
	case <-done:
	case <-ctx.Done():
		for i := range msgs {
			errs[i] = fmt.Errorf("add event %s to stream %q: no reply before the sink stopped: %w", msgs[i].id, msgs[i].stream, ctx.Err())
		}
		return
	}
	for i, cmd := range cmds {
		if err := cmd.Err(); err != nil {
			errs[i] = sendError(&msgs[i], err)
		}
	}
}

// Classify reports whether err, from Send, means the entry can never be
// added; see classify.
func (b *broker) Classify(err error) (reason string, permanent bool) {
	return classify(err)
}

// Ping sends PING, connecting first if need be, and returns an error saying
// what to check when the server does not answer PONG within ctx.
func (b *broker) Ping(ctx context.Context) error {
	if err := b.client.Ping(ctx).Err(); err != nil {
		return explain(b.url, err)
	}
	return nil
}

// Close closes the client's connections, which ends any pipeline still
// running, and waits for those pipelines.
func (b *broker) Close() error {
	err := b.client.Close()
	b.wg.Wait()
	if err != nil {
		return fmt.Errorf("close redis client of %s: %w", b.url, err)
	}
	return nil
}
