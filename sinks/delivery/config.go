package delivery

import (
	"errors"
	"fmt"
	"time"
)

// Defaults of Config's zero fields.
const (
	// DefaultMaxBatch is Config.MaxBatch when zero.
	DefaultMaxBatch = 256
	// DefaultSenders is Config.Senders when zero: while one batch waits
	// for the broker's acknowledgements, the next is on its way.
	DefaultSenders = 2
	// DefaultRetryMin and DefaultRetryMax are Config.RetryMin and
	// Config.RetryMax when zero.
	DefaultRetryMin = 100 * time.Millisecond
	DefaultRetryMax = 5 * time.Second
)

// Config configures a Sink.
type Config struct {
	// Name names the sink in logs (component) and in the sink label of its
	// metrics: nats, rabbitmq, redis. Required.
	Name string
	// MaxBatch bounds the messages one Send carries. Zero means
	// DefaultMaxBatch.
	MaxBatch int
	// Senders is how many Sends may be under way at once, each with
	// messages of other keys. Zero means DefaultSenders.
	Senders int
	// RetryMin and RetryMax bound the exponential backoff (with jitter)
	// after a Send in which a message failed for a passing reason: no
	// message is sent until it has passed. Zero means DefaultRetryMin and
	// DefaultRetryMax.
	RetryMin, RetryMax time.Duration
}

// WithDefaults returns c with its zero fields set to the defaults: what a
// Sink runs with. A sink that sizes its client by the batches in flight
// reads it.
func (c Config) WithDefaults() Config {
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.Senders == 0 {
		c.Senders = DefaultSenders
	}
	if c.RetryMin == 0 {
		c.RetryMin = DefaultRetryMin
	}
	if c.RetryMax == 0 {
		c.RetryMax = DefaultRetryMax
	}
	return c
}

// Validate reports what is wrong with c, if anything.
func (c Config) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("delivery: the sink needs a name"))
	}
	if c.MaxBatch < 0 {
		errs = append(errs, fmt.Errorf("delivery: max batch is %d; use a positive number, or 0 for %d", c.MaxBatch, DefaultMaxBatch))
	}
	if c.Senders < 0 {
		errs = append(errs, fmt.Errorf("delivery: senders is %d; use a positive number, or 0 for %d", c.Senders, DefaultSenders))
	}
	if c.RetryMin < 0 || c.RetryMax < 0 {
		errs = append(errs, fmt.Errorf("delivery: retry backoff %s to %s; use positive durations, or 0 for %s to %s", c.RetryMin, c.RetryMax, DefaultRetryMin, DefaultRetryMax))
	}
	if d := c.WithDefaults(); d.RetryMin > d.RetryMax {
		errs = append(errs, fmt.Errorf("delivery: retry backoff starts at %s, after its maximum %s", d.RetryMin, d.RetryMax))
	}
	return errors.Join(errs...)
}
