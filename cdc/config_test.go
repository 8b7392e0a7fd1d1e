package cdc

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/outbox-relay/outbox-relay/schema"
)

func TestConfigWithDefaults(t *testing.T) {
	set := Config{
		DSN:             "postgres://localhost/db",
		Table:           schema.Table{Schema: "app", Name: "events"},
		Columns:         schema.Columns{ID: "event_id", AggregateType: "kind", AggregateID: "key", EventType: "type", Payload: "body"},
		Publication:     "pub",
		Slot:            "slot",
		StatusInterval:  3 * time.Second,
		ShutdownTimeout: time.Minute,
		CreateSlot:      true,
		MessagePrefix:   "app",
	}
	tests := []struct {
		name string
		in   Config
		want Config
	}{
		{"zero", Config{}, Config{
			Table:           schema.DefaultTable,
			Columns:         schema.DefaultColumns,
			Publication:     DefaultPublication,
			Slot:            DefaultSlot,
			StatusInterval:  DefaultStatusInterval,
			ShutdownTimeout: DefaultShutdownTimeout,
			MessagePrefix:   schema.DefaultMessagePrefix,
		}},
		{"set", set, set},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.in.withDefaults()); diff != "" {
				t.Errorf("withDefaults() (-want +got):\n%s", diff)
			}
			got := tt.in
			got.SetDefaults()
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("SetDefaults() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	const dsn = "postgres://localhost/db"
	tests := []struct {
		name string
		cfg  Config
		want string // a part of the error; empty for none
	}{
		{"defaults", Config{DSN: dsn}, ""},
		{"no DSN", Config{}, "no PostgreSQL DSN"},
		{"malformed DSN", Config{DSN: "postgres://localhost:port/db"}, "DSN is malformed"},
		{"slot name", Config{DSN: dsn, Slot: "Outbox"}, `slot name "Outbox" is invalid`},
		{"publication name", Config{DSN: dsn, Publication: strings.Repeat("p", 64)}, "publication name"},
		{"message prefix", Config{DSN: dsn, MessagePrefix: "a\x00b"}, "NUL byte"},
		{"negative interval", Config{DSN: dsn, StatusInterval: -time.Second}, "must not be negative"},
		{"negative timeout", Config{DSN: dsn, ShutdownTimeout: -time.Second}, "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
