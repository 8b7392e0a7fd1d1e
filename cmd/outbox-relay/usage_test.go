package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestHelpPrintsDoubleDashFlags(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"SUBCOMMANDS", "run", "--pg-dsn is OUTBOX_RELAY_PG_DSN"}},
		{[]string{"run", "--help"}, []string{"--pg-dsn", "OUTBOX_RELAY_PG_DSN", "--kafka-brokers", `(default "localhost:9092")`, "--shutdown-timeout", "OUTBOX_RELAY_SHUTDOWN_TIMEOUT", "(default 30s)", "--pprof-addr"}},
		{[]string{"setup", "--help"}, []string{"--pg-dsn", "--dry-run", "OUTBOX_RELAY_DRY_RUN"}},
		{[]string{"status", "--help"}, []string{"--pg-dsn", "--json"}},
		{[]string{"dlq", "list", "--help"}, []string{"--dlq-topic", "OUTBOX_RELAY_DLQ_TOPIC", `(default "outbox-relay-dlq")`, "--since", "--json", "--kafka-sasl-mechanism"}},
		{[]string{"dlq", "replay", "--help"}, []string{"--id ID", "--offset PARTITION/OFFSET", "--all", "--dry-run", "id header is kept"}},
		{[]string{"healthcheck", "--help"}, []string{"--metrics-addr", `(default ":9479")`, "--path"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), tt.args, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("run(%q) = %v, want flag.ErrHelp", tt.args, err)
			}
			help := stdout.String() + stderr.String()
			for _, want := range tt.want {
				if !strings.Contains(help, want) {
					t.Errorf("%q printed:\n%s\nwant it to contain %q", tt.args, help, want)
				}
			}
			for _, l := range strings.Split(help, "\n") {
				if f := strings.TrimSpace(l); strings.HasPrefix(f, "-") && !strings.HasPrefix(f, "--") {
					t.Errorf("%q printed the single-dash flag line %q, want --flag as the docs write it", tt.args, l)
				}
			}
		})
	}
}
