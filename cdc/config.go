package cdc

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/schema"
)

// Defaults of the Config fields that cdc owns. Table, Columns and
// MessagePrefix default to schema.DefaultTable, schema.DefaultColumns and
// schema.DefaultMessagePrefix.
const (
	// DefaultPublication is the publication a zero Config.Publication names.
	DefaultPublication = "outbox_relay"
	// DefaultSlot is the replication slot a zero Config.Slot names.
	DefaultSlot = "outbox_relay"
	// DefaultStatusInterval is the longest time between two status updates
	// when Config.StatusInterval is zero.
	DefaultStatusInterval = time.Second
	// DefaultShutdownTimeout bounds a clean stop when Config.ShutdownTimeout
	// is zero.
	DefaultShutdownTimeout = 30 * time.Second
)

// Config says which database, table, publication and slot a Stream uses.
// New, NewMonitor, Setup, SetupSQL, Teardown and Recreate fill its zero
// fields with their defaults.
type Config struct {
	// DSN is a PostgreSQL connection string (URL or key=value). The stream
	// derives its replication connection from it. Required.
	DSN string
	// Table is the outbox table. Zero means schema.DefaultTable
	// (public.outbox).
	Table schema.Table
	// Columns maps the table's columns to event fields. Zero means
	// schema.DefaultColumns.
	Columns schema.Columns
	// Publication names the publication of the outbox table. Zero means
	// DefaultPublication.
	Publication string
	// Slot names the logical replication slot. Zero means DefaultSlot.
	Slot string
	// StatusInterval is how often the stream confirms its flush position to
	// the server. Zero means DefaultStatusInterval.
	StatusInterval time.Duration
	// ShutdownTimeout bounds a clean stop, from the moment the stream's
	// context ends: reading to the end of the open transaction, waiting for
	// in-flight events to be acknowledged, and sending the final position,
	// for which the last tenth (at most one second) is kept. Zero means
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// CreateSlot lets Run create the slot, as Setup does, when it is missing
	// at Run's first connection; the new slot sees only transactions that
	// commit after it. A slot missing once Run has streamed is never
	// recreated: Run returns an error wrapping ErrSlotLost. Zero means false:
	// a missing slot is an error wrapping ErrNoSlot.
	CreateSlot bool
	// MessagePrefix is the prefix of the transactional logical decoding
	// messages (pg_logical_emit_message) relayed as outbox events, their
	// content in the form schema.Emit writes. Messages of other prefixes,
	// and non-transactional ones, are read past. Zero means
	// schema.DefaultMessagePrefix.
	MessagePrefix string
}

// SetDefaults fills c's zero fields with their documented defaults, for
// callers that read the effective settings; this package's functions apply
// the defaults themselves.
func (c *Config) SetDefaults() { *c = c.withDefaults() }

// withDefaults returns c with its zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Table == (schema.Table{}) {
		c.Table = schema.DefaultTable
	}
	if c.Columns == (schema.Columns{}) {
		c.Columns = schema.DefaultColumns
	}
	if c.Publication == "" {
		c.Publication = DefaultPublication
	}
	if c.Slot == "" {
		c.Slot = DefaultSlot
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = DefaultStatusInterval
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.MessagePrefix == "" {
		c.MessagePrefix = schema.DefaultMessagePrefix
	}
	return c
}

// Validate reports a missing or malformed setting and how to fix it. It
// checks c with its defaults applied, so zero optional fields are valid.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.DSN == "" {
		return ErrNoDSN
	}
	if _, err := pgx.ParseConfig(c.DSN); err != nil {
		return fmt.Errorf("PostgreSQL DSN is malformed: %w", err)
	}
	if err := c.Columns.Validate(); err != nil {
		return err
	}
	if !validSlotName(c.Slot) {
		return fmt.Errorf("slot name %q is invalid; use lower-case letters, digits and underscores, at most 63", c.Slot)
	}
	if c.Publication == "" || len(c.Publication) > 63 {
		return fmt.Errorf("publication name %q is invalid; use at most 63 characters", c.Publication)
	}
	if strings.ContainsRune(c.MessagePrefix, 0) {
		return fmt.Errorf("message prefix %q holds a NUL byte, which no message prefix can; use another", c.MessagePrefix)
	}
	if c.StatusInterval < 0 || c.ShutdownTimeout < 0 {
		return fmt.Errorf("status interval %s and shutdown timeout %s must not be negative", c.StatusInterval, c.ShutdownTimeout)
	}
	return nil
}

// LogValue describes c for logs without its password.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("dsn", RedactDSN(c.DSN)),
		slog.String("table", c.Table.String()),
		slog.String("publication", c.Publication),
		slog.String("slot", c.Slot),
	)
}

func validSlotName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_' {
			return false
		}
	}
	return true
}
