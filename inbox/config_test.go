package inbox

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func TestConfigDefaults(t *testing.T) {
	cfg := Config{Group: "g"}
	cfg.SetDefaults()
	if cfg.Name != "g" || cfg.Table != DefaultTable || cfg.MaxAttempts != DefaultMaxAttempts ||
		cfg.BackoffInitial != DefaultBackoffInitial || cfg.BackoffMax != DefaultBackoffMax ||
		cfg.DeadLetterTopic != DefaultDeadLetterTopic || cfg.OrderBy != OrderByPartition {
		t.Errorf("SetDefaults() = %+v", cfg)
	}
}

func TestConfigValidate(t *testing.T) {
	valid := func() Config {
		return Config{Brokers: []string{"k:9092"}, Group: "g", Topics: []string{"t"}, DB: &pgxpool.Pool{}}
	}
	for _, tt := range []struct {
		name   string
		change func(*Config)
		want   string // "" means valid
	}{
		{"valid", func(*Config) {}, ""},
		{"no group", func(c *Config) { c.Group = ""; c.Name = "x" }, "set Group"},
		{"no topics", func(c *Config) { c.Topics = nil }, "set Topics"},
		{"no db", func(c *Config) { c.DB = nil }, "set DB"},
		{"no brokers", func(c *Config) { c.Brokers = nil }, "set Brokers"},
		{"bad table", func(c *Config) { c.Table = "a.b.c" }, "schema.name"},
		{"dlq consumed", func(c *Config) { c.Topics = []string{DefaultDeadLetterTopic} }, "dead-letter topic"},
		{"bad order", func(c *Config) { c.OrderBy = 7 }, "OrderByKey"},
		{"negative attempts", func(c *Config) { c.MaxAttempts = -1 }, "MaxAttempts"},
		{"backoff inverted", func(c *Config) { c.BackoffInitial = time.Minute; c.BackoffMax = time.Second }, "BackoffInitial"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid()
			tt.change(&cfg)
			cfg.SetDefaults()
			err := cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestIsPermanent(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{Permanent(errString("x")), true},
		{Retryable(errString("x")), false},
		{errString("x"), false},
		{Retryable(Permanent(errString("x"))), false},
		{wrap(Permanent(errString("x"))), true},
	} {
		if got := IsPermanent(tt.err); got != tt.want {
			t.Errorf("IsPermanent(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	if Permanent(nil) != nil || Retryable(nil) != nil {
		t.Error("Permanent(nil) or Retryable(nil) is not nil")
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func wrap(err error) error { return &wrapped{err} }

type wrapped struct{ err error }

func (w *wrapped) Error() string { return "wrapped: " + w.err.Error() }
func (w *wrapped) Unwrap() error { return w.err }

// TestTwoConsumersOneRegistry makes two consumers of different groups
// with one registry: both register, each under its own label.
func TestTwoConsumersOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	for _, group := range []string{"a", "b"} {
		cfg := Config{Brokers: []string{"127.0.0.1:1"}, Group: group, Topics: []string{"t"}, DB: new(pgxpool.Pool)}
		c, err := New(cfg, func(context.Context, pgx.Tx, Event) error { return nil }, nil, reg)
		if err != nil {
			t.Fatalf("New for group %s: %v", group, err)
		}
		c.metrics.processed.Inc()
	}
	if n := testutil.CollectAndCount(reg, "outbox_inbox_processed_total"); n != 2 {
		t.Errorf("outbox_inbox_processed_total has %d series, want one per consumer", n)
	}
}
