package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

func TestRunRejectsBadConfiguration(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no subcommand", nil, nil, "name a subcommand: setup, run, replay, status, prune, dlq, healthcheck or version"},
		{"unknown flag", []string{"run", "--nope"}, nil, "run: flag provided but not defined: -nope; outbox-relay run -h lists its flags"},
		{"unknown flag of dlq list", []string{"dlq", "list", "--nope"}, nil, "dlq list: flag provided but not defined: -nope; outbox-relay dlq list -h lists its flags"},
		{"unknown root flag", []string{"--nope"}, nil, "flag provided but not defined: -nope; outbox-relay -h lists its flags"},
		{"bad duration", []string{"run", "--shutdown-timeout", "soon"}, nil, `run: invalid value "soon" for flag -shutdown-timeout: want a duration such as 500ms, 5s or 1m30s; outbox-relay run -h lists its flags`},
		{"bad boolean", []string{"run", "--create-slot=maybe"}, nil, `run: invalid boolean value "maybe" for -create-slot: want true or false; outbox-relay run -h lists its flags`},
		{"bad number", []string{"run", "--max-inflight-events", "1e3"}, nil, `run: invalid value "1e3" for flag -max-inflight-events: want a whole number; outbox-relay run -h lists its flags`},
		{"number out of range", []string{"run", "--max-inflight-events", "99999999999999999999"}, nil, `run: invalid value "99999999999999999999" for flag -max-inflight-events: value out of range; outbox-relay run -h lists its flags`},
		{"bad duration from env", []string{"run"}, map[string]string{"OUTBOX_RELAY_STATUS_INTERVAL": "5"}, `run: invalid value "5" in OUTBOX_RELAY_STATUS_INTERVAL (flag -status-interval): want a duration such as 500ms, 5s or 1m30s; outbox-relay run -h lists its flags`},
		{"bad boolean from env of dlq list", []string{"dlq", "list"}, map[string]string{"OUTBOX_RELAY_JSON": "yes"}, `dlq list: invalid value "yes" in OUTBOX_RELAY_JSON (flag -json): want true or false; outbox-relay dlq list -h lists its flags`},
		{"bad value from env of a flag of its own kind", []string{"prune"}, map[string]string{"OUTBOX_RELAY_OLDER_THAN": "3"}, `prune: OUTBOX_RELAY_OLDER_THAN (flag -older-than): "3": want a duration such as 7d, 36h or 90m; outbox-relay prune -h lists its flags`},
		{"unknown subcommand", []string{"runn"}, nil, `unknown subcommand "runn"; see outbox-relay -h`},
		{"unknown dlq subcommand", []string{"dlq", "lsit"}, nil, `unknown subcommand "lsit"; see outbox-relay dlq -h`},
		{"stray word before flags", []string{"run", "--pg-dsn", "postgres://h/db", "--create-slot", "true", "--kafka-brokers", "k:9092"}, nil, `run: unexpected argument "true", and the flags after it were not read; give a boolean flag's value as --flag=true`},
		{"stray word after setup", []string{"setup", "--dry-run", "extra"}, nil, `setup: unexpected argument "extra"`},
		{"stray word after dlq list", []string{"dlq", "list", "x"}, nil, `dlq list: unexpected argument "x"`},
		{"second value of dlq replay --id", []string{"dlq", "replay", "--id", "a", "b"}, nil, `dlq replay: unexpected argument "b", and the flags after it were not read; give each value its own flag: --id a --id b`},
		{"unknown sink of setup's dry run", []string{"setup", "--dry-run", "--sink=natz", "--nats-url", "nats://n:4222"}, nil, `--sink "natz": use one of kafka, nats, rabbitmq, redis`},
		{"no DSN", []string{"run"}, nil, "no PostgreSQL DSN"},
		{"malformed DSN", []string{"run", "--pg-dsn", "postgres://a:b@host:notaport/db"}, nil, "is malformed"},
		{"bad table", []string{"run", "--pg-dsn", "postgres://h/db", "--table", "a.b.c"}, nil, "--table"},
		{"bad table from env", []string{"run", "--pg-dsn", "postgres://h/db"}, map[string]string{"OUTBOX_RELAY_TABLE": "a.b.c"}, "--table"},
		{"bad slot", []string{"run", "--pg-dsn", "postgres://h/db", "--slot", "Bad-Slot"}, nil, "slot name"},
		{"empty column", []string{"run", "--pg-dsn", "postgres://h/db", "--column-aggregate-id", ""}, nil, "aggregate_id"},
		{"same column twice", []string{"run", "--pg-dsn", "postgres://h/db", "--column-aggregate-id", "id"}, nil, "mapped to both"},
		{"bad topic template", []string{"run", "--pg-dsn", "postgres://h/db", "--topic", "outbox.{nope}"}, nil, "{nope}"},
		{"no brokers", []string{"run", "--pg-dsn", "postgres://h/db", "--kafka-brokers", " , "}, nil, "broker"},
		{"bad log format", []string{"run", "--pg-dsn", "postgres://h/db", "--log-format", "xml"}, nil, "--log-format"},
		{"negative bound", []string{"run", "--pg-dsn", "postgres://h/db", "--max-inflight-events", "-1"}, nil, "in-flight events"},
		{"negative max procs", []string{"run", "--pg-dsn", "postgres://h/db", "--max-procs", "-2"}, nil, "--max-procs is -2"},
		{"negative memory limit", []string{"run", "--pg-dsn", "postgres://h/db", "--memory-limit", "-1"}, nil, "--memory-limit is -1"},
		{"pprof on all interfaces", []string{"run", "--pg-dsn", "postgres://h/db", "--pprof-addr", "0.0.0.0:6060"}, nil, "--pprof-addr \"0.0.0.0:6060\": pprof must listen on a loopback address; use 127.0.0.1:6060"},
		{"pprof without host", []string{"run", "--pg-dsn", "postgres://h/db", "--pprof-addr", ":6060"}, nil, "loopback"},
		{"pprof on IPv6 any", []string{"run", "--pg-dsn", "postgres://h/db", "--pprof-addr", "[::]:6060"}, nil, "loopback"},
		{"pprof on a LAN address", []string{"run", "--pg-dsn", "postgres://h/db", "--pprof-addr", "10.1.2.3:6060"}, nil, "loopback"},
		{"pprof on a host name", []string{"run", "--pg-dsn", "postgres://h/db", "--pprof-addr", "relay.example.com:6060"}, nil, "loopback"},
		{"pprof from env", []string{"run", "--pg-dsn", "postgres://h/db"}, map[string]string{"OUTBOX_RELAY_PPROF_ADDR": "0.0.0.0:6060"}, "loopback"},
		{"pprof without port", []string{"run", "--pg-dsn", "postgres://h/db", "--pprof-addr", "127.0.0.1"}, nil, "--pprof-addr"},
		{"empty nats url", []string{"run", "--pg-dsn", "postgres://h/db", "--sink", "nats", "--nats-url", ""}, nil, "--nats-url is empty; set nats://host:port, or leave it unset for nats://127.0.0.1:4222"},
		{"empty nats url from env", []string{"run", "--pg-dsn", "postgres://h/db", "--sink", "nats"}, map[string]string{"OUTBOX_RELAY_NATS_URL": " "}, "--nats-url is empty"},
		{"unknown compression", []string{"run", "--pg-dsn", "postgres://h/db", "--kafka-compression", "gzip"}, nil, `compression "gzip" is unknown; use none, snappy, lz4 or zstd`},
		{"unknown compression from env", []string{"run", "--pg-dsn", "postgres://h/db"}, map[string]string{"OUTBOX_RELAY_KAFKA_COMPRESSION": "LZ4"}, `compression "LZ4" is unknown; use none, snappy, lz4 or zstd`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, &stdout, &stderr)
			if err == nil {
				t.Fatalf("run(%q) = nil, want an error", tt.args)
			}
			if code := exitCode(err); code != 2 {
				t.Errorf("exitCode(%v) = %d, want 2", err, code)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run(%q) = %q, want it to contain %q", tt.args, err, tt.want)
			}
		})
	}
}

// TestParseErrorOmitsUsage checks that a flag the command lacks is
// reported without the command's usage, which -h still prints.
func TestParseErrorOmitsUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"run", "--nope"}, &stdout, &stderr); err == nil {
		t.Fatal("run --nope = nil, want an error")
	}
	if out := stdout.String() + stderr.String(); out != "" {
		t.Errorf("run --nope printed %d bytes besides its error, want none:\n%s", len(out), out)
	}
	stdout.Reset()
	stderr.Reset()
	if err := run(context.Background(), []string{"run", "-h"}, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run -h = %v, want flag.ErrHelp", err)
	}
	if !strings.Contains(stderr.String(), "--kafka-brokers") {
		t.Errorf("run -h printed %q, want the usage with --kafka-brokers", stderr.String())
	}
}

func TestFlagBeatsEnvironment(t *testing.T) {
	t.Setenv("OUTBOX_RELAY_SLOT", "Bad-From-Env")
	var stdout, stderr bytes.Buffer
	// The flag's valid slot wins over the environment's invalid one, so the
	// error is about the next problem: the table.
	err := run(context.Background(), []string{"run", "--pg-dsn", "postgres://h/db", "--slot", "good", "--table", "a.b.c"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--table") {
		t.Fatalf("run = %v, want the --table error", err)
	}
	t.Setenv("OUTBOX_RELAY_SLOT", "good")
	err = run(context.Background(), []string{"run", "--pg-dsn", "postgres://h/db", "--slot", "Bad-From-Flag"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "Bad-From-Flag") {
		t.Fatalf("run = %v, want the flag's slot rejected", err)
	}
}

func TestKafkaCompression(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  string // OUTBOX_RELAY_KAFKA_COMPRESSION; empty: unset
		want kafka.Compression
	}{
		{name: "default", want: kafka.DefaultCompression},
		{name: "flag", args: []string{"--kafka-compression", "lz4"}, want: kafka.CompressionLZ4},
		{name: "flag none", args: []string{"--kafka-compression=none"}, want: kafka.CompressionNone},
		{name: "env", env: "zstd", want: kafka.CompressionZstd},
		{name: "flag beats env", args: []string{"--kafka-compression", "snappy"}, env: "zstd", want: kafka.CompressionSnappy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv("OUTBOX_RELAY_KAFKA_COMPRESSION", tt.env)
			}
			c, err := parseRun(t, append([]string{"--pg-dsn", "postgres://h/db"}, tt.args...))
			if err != nil {
				t.Fatalf("parse %q: %v", tt.args, err)
			}
			if c.Kafka.Compression != tt.want {
				t.Errorf("parse %q with env %q: Kafka.Compression = %q, want %q", tt.args, tt.env, c.Kafka.Compression, tt.want)
			}
		})
	}
}

func TestPprofAddrAcceptsLoopback(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:6060", "localhost:6060", "[::1]:6060", "127.0.0.1:0"} {
		t.Run(addr, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			// An accepted address lets validation reach the next problem:
			// the brokers.
			err := run(context.Background(), []string{"run", "--pg-dsn", "postgres://h/db", "--pprof-addr", addr, "--kafka-brokers", " , "}, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), "broker") {
				t.Errorf("run --pprof-addr %s = %v, want it accepted and the broker error", addr, err)
			}
		})
	}
}

func TestSetupDryRunNeedsNoDatabase(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"setup", "--dry-run", "--table", "app.events", "--slot", "s1"}, &stdout, &stderr); err != nil {
		t.Fatalf("setup --dry-run = %v", err)
	}
	for _, want := range []string{`CREATE TABLE IF NOT EXISTS "app"."events"`, `CREATE PUBLICATION "outbox_relay" FOR TABLE "app"."events" WITH (publish = 'insert')`, `pg_create_logical_replication_slot('s1', 'pgoutput')`} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("setup --dry-run printed:\n%s\nwant it to contain %q", stdout.String(), want)
		}
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout.String(), "outbox-relay ") || !strings.Contains(stdout.String(), "go1.") {
		t.Errorf("version printed %q, want name, version and Go version", stdout.String())
	}
}

func TestHelpExitsZero(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"run", "--help"}, &stdout, &stderr)
	if code := exitCode(err); code != 0 || !errors.Is(err, flag.ErrHelp) {
		t.Errorf("run --help: exit %d (%v), want 0", code, err)
	}
}

func TestPoisonPolicyFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"run", "--pg-dsn", "postgres://h/db", "--poison-policy", "ignore"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), `poison policy "ignore"`) || exitCode(err) != 2 {
		t.Errorf("run --poison-policy ignore = %v, want a usage error naming the policy", err)
	}
}

func TestHealthcheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "PostgreSQL does not answer")
			return
		}
		fmt.Fprintln(w, "ok")
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"healthcheck", "--metrics-addr", addr}, &stdout, &stderr); err != nil {
		t.Errorf("healthcheck of a healthy relay = %v", err)
	}
	err := run(context.Background(), []string{"healthcheck", "--metrics-addr", addr, "--path", "/readyz"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "PostgreSQL does not answer") || exitCode(err) != 1 {
		t.Errorf("healthcheck of an unready relay = %v, want exit 1 with the reason", err)
	}
	if err := run(context.Background(), []string{"healthcheck", "--metrics-addr", "127.0.0.1:1"}, &stdout, &stderr); err == nil {
		t.Error("healthcheck with nothing listening = nil, want an error")
	}
}

func TestMemoryLimit(t *testing.T) {
	for _, c := range []struct {
		limit    int64
		inflight int
		want     int64
	}{
		{0, 8 << 20, 40 << 20},
		{0, 0, 40 << 20}, // the relay's default bound
		{0, 64 << 20, 3*64<<20 + 16<<20},
		{100 << 20, 8 << 20, 100 << 20},
	} {
		if got := memoryLimit(c.limit, c.inflight); got != c.want {
			t.Errorf("memoryLimit(%d, %d) = %d, want %d", c.limit, c.inflight, got, c.want)
		}
	}
}

// TestWarnsOfOtherSinksFlags checks that flags of another sink than --sink,
// set on the command line or in the environment, are named in a warning:
// they have no effect, and --sink is most likely missing.
func TestWarnsOfOtherSinksFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // the warning's flags; empty: no warning
	}{
		{"flag", []string{"--nats-url", "nats://n:4222"}, nil, `"sink":"kafka","flags":["--nats-url"]`},
		{"flags and environment", []string{"--sink=redis", "--nats-stream", "S"}, map[string]string{"OUTBOX_RELAY_RABBITMQ_URL": "amqp://r"}, `"sink":"redis","flags":["--nats-stream","--rabbitmq-url"]`},
		{"the sink's own", []string{"--sink=nats", "--nats-url", "nats://n:4222"}, nil, ""},
		{"none", nil, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			args := append([]string{"setup", "--dry-run", "--log-format=json"}, tt.args...)
			if err := run(context.Background(), args, &stdout, &stderr); err != nil {
				t.Fatalf("run(%q) = %v", args, err)
			}
			warned := strings.Contains(stderr.String(), "flags of another sink than --sink have no effect")
			switch {
			case tt.want == "" && warned:
				t.Errorf("run(%q) warned, want no warning:\n%s", args, stderr.String())
			case tt.want != "" && !strings.Contains(stderr.String(), tt.want):
				t.Errorf("run(%q) logged %q, want a warning with %s", args, stderr.String(), tt.want)
			}
		})
	}
}
