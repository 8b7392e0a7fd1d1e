package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/peterbourgon/ff/v3"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

// writeSecret writes content to a new file and returns its path.
func writeSecret(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// parseRun parses args and the environment as `run` does and finishes the
// configuration.
func parseRun(t *testing.T, args []string) (Config, error) {
	t.Helper()
	var c Config
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	bindRun(fs, &c)
	if err := ff.Parse(fs, args, ff.WithEnvVarPrefix(envPrefix)); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return c, c.finishRun()
}

func TestSecretFiles(t *testing.T) {
	dsn := "postgres://relay:pg-s3cret@db.internal:5432/app?sslmode=verify-full"
	dsnFile := writeSecret(t, "dsn", dsn+"\n")
	passFile := writeSecret(t, "password", "kafka-s3cret\r\n")
	tokenFile := writeSecret(t, "token", "eyJ.token.sig\n\n")
	spaced := writeSecret(t, "spaced", " pass word \n")

	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(c Config) any // the part of the finished Config to compare
		val  any
	}{
		{
			name: "DSN from file",
			args: []string{"--pg-dsn-file", dsnFile},
			want: func(c Config) any { return c.CDC.DSN },
			val:  dsn,
		},
		{
			name: "DSN file from environment",
			env:  map[string]string{"OUTBOX_RELAY_PG_DSN_FILE": dsnFile},
			want: func(c Config) any { return c.CDC.DSN },
			val:  dsn,
		},
		{
			name: "SASL password from file",
			args: []string{"--pg-dsn", "postgres://h/db", "--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-sasl-username", "relay", "--kafka-sasl-password-file", passFile},
			want: func(c Config) any { return c.Kafka.SASL },
			val:  kafka.SASLConfig{Mechanism: "SCRAM-SHA-512", Username: "relay", Password: "kafka-s3cret"},
		},
		{
			name: "SASL password file from environment",
			args: []string{"--pg-dsn", "postgres://h/db"},
			env: map[string]string{"OUTBOX_RELAY_KAFKA_SASL_MECHANISM": "PLAIN", "OUTBOX_RELAY_KAFKA_SASL_USERNAME": "relay",
				"OUTBOX_RELAY_KAFKA_SASL_PASSWORD_FILE": passFile},
			want: func(c Config) any { return c.Kafka.SASL },
			val:  kafka.SASLConfig{Mechanism: "PLAIN", Username: "relay", Password: "kafka-s3cret"},
		},
		{
			name: "only trailing newlines are trimmed",
			args: []string{"--pg-dsn", "postgres://h/db", "--kafka-sasl-mechanism", "PLAIN", "--kafka-sasl-username", "relay", "--kafka-sasl-password-file", spaced},
			want: func(c Config) any { return c.Kafka.SASL.Password },
			val:  " pass word ",
		},
		{
			name: "token from file",
			args: []string{"--pg-dsn", "postgres://h/db", "--kafka-sasl-mechanism", "OAUTHBEARER", "--kafka-sasl-token-file", tokenFile},
			want: func(c Config) any { return c.Kafka.SASL },
			val:  kafka.SASLConfig{Mechanism: "OAUTHBEARER", Token: "eyJ.token.sig"},
		},
		{
			name: "values without files",
			args: []string{"--pg-dsn", dsn, "--kafka-sasl-mechanism", "PLAIN", "--kafka-sasl-username", "relay", "--kafka-sasl-password", "inline"},
			want: func(c Config) any { return []string{c.CDC.DSN, c.Kafka.SASL.Password} },
			val:  []string{dsn, "inline"},
		},
		{
			name: "TLS flags",
			args: []string{"--pg-dsn", "postgres://h/db", "--kafka-tls", "--kafka-tls-server-name", "kafka.internal", "--kafka-tls-insecure-skip-verify"},
			want: func(c Config) any { return c.Kafka.TLS },
			val:  kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{ServerName: "kafka.internal", InsecureSkipVerify: true}},
		},
		{
			name: "TLS from environment",
			args: []string{"--pg-dsn", "postgres://h/db"},
			env:  map[string]string{"OUTBOX_RELAY_KAFKA_TLS": "true", "OUTBOX_RELAY_KAFKA_TLS_SERVER_NAME": "kafka.internal"},
			want: func(c Config) any { return c.Kafka.TLS },
			val:  kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{ServerName: "kafka.internal"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			c, err := parseRun(t, tt.args)
			if err != nil {
				t.Fatalf("finishRun(%q) = %v", tt.args, err)
			}
			if diff := cmp.Diff(tt.val, tt.want(c)); diff != "" {
				t.Errorf("finishRun(%q): (-want +got)\n%s", tt.args, diff)
			}
		})
	}
}

func TestSecretFileErrors(t *testing.T) {
	dir := t.TempDir()
	passFile := writeSecret(t, "password", "kafka-s3cret\n")
	dsnFile := writeSecret(t, "dsn", "postgres://relay:pg-s3cret@h/db\n")
	empty := writeSecret(t, "empty", "\n")
	missing := filepath.Join(dir, "missing")
	sasl := []string{"--pg-dsn", "postgres://h/db", "--kafka-sasl-mechanism", "SCRAM-SHA-256", "--kafka-sasl-username", "relay"}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{
			name: "DSN and its file",
			args: []string{"run", "--pg-dsn", "postgres://relay:pg-s3cret@h/db", "--pg-dsn-file", dsnFile},
			want: []string{"--pg-dsn (OUTBOX_RELAY_PG_DSN) and --pg-dsn-file (OUTBOX_RELAY_PG_DSN_FILE) are both set"},
		},
		{
			name: "DSN in environment and its file as flag",
			args: []string{"run", "--pg-dsn-file", dsnFile},
			env:  map[string]string{"OUTBOX_RELAY_PG_DSN": "postgres://relay:pg-s3cret@h/db"},
			want: []string{"--pg-dsn", "--pg-dsn-file", "both set"},
		},
		{
			name: "password and its file",
			args: append(append([]string{"run"}, sasl...), "--kafka-sasl-password", "kafka-s3cret", "--kafka-sasl-password-file", passFile),
			want: []string{"--kafka-sasl-password (OUTBOX_RELAY_KAFKA_SASL_PASSWORD) and --kafka-sasl-password-file", "both set"},
		},
		{
			name: "token and its file",
			args: []string{"run", "--pg-dsn", "postgres://h/db", "--kafka-sasl-mechanism", "OAUTHBEARER", "--kafka-sasl-token-file", passFile},
			env:  map[string]string{"OUTBOX_RELAY_KAFKA_SASL_TOKEN": "kafka-s3cret"},
			want: []string{"--kafka-sasl-token", "--kafka-sasl-token-file", "both set"},
		},
		{
			name: "missing DSN file",
			args: []string{"run", "--pg-dsn-file", missing},
			want: []string{"--pg-dsn-file", missing, "no such file"},
		},
		{
			name: "unreadable password file",
			args: append(append([]string{"run"}, sasl...), "--kafka-sasl-password-file", dir),
			want: []string{"--kafka-sasl-password-file", dir, "is a directory"},
		},
		{
			name: "empty password file",
			args: append(append([]string{"run"}, sasl...), "--kafka-sasl-password-file", empty),
			want: []string{"--kafka-sasl-password-file", empty, "is empty"},
		},
		{
			name: "missing DSN file for status",
			args: []string{"status", "--pg-dsn-file", missing},
			want: []string{"--pg-dsn-file", missing},
		},
		{
			name: "missing DSN file for setup",
			args: []string{"setup", "--pg-dsn-file", missing},
			want: []string{"--pg-dsn-file", missing},
		},
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
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("run(%q) = %q, want it to contain %q", tt.args, err, w)
				}
			}
			for _, secret := range []string{"pg-s3cret", "kafka-s3cret"} {
				if strings.Contains(err.Error()+stdout.String()+stderr.String(), secret) {
					t.Errorf("run(%q) shows the secret %q: %v\n%s%s", tt.args, secret, err, stdout.String(), stderr.String())
				}
			}
		})
	}
}

func TestKafkaSecurityValidation(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "ca.pem")
	base := []string{"run", "--pg-dsn", "postgres://h/db"}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"unknown mechanism", []string{"--kafka-sasl-mechanism", "GSSAPI"}, []string{`SASL mechanism "GSSAPI" is unknown`}},
		{"no password", []string{"--kafka-sasl-mechanism", "SCRAM-SHA-256", "--kafka-sasl-username", "relay"}, []string{"SCRAM-SHA-256 needs a password"}},
		{"no username", []string{"--kafka-sasl-mechanism", "PLAIN", "--kafka-sasl-password", "kafka-s3cret"}, []string{"PLAIN needs a username"}},
		{"no token", []string{"--kafka-sasl-mechanism", "OAUTHBEARER"}, []string{"OAUTHBEARER needs a token"}},
		{"password without mechanism", []string{"--kafka-sasl-password", "kafka-s3cret"}, []string{"no SASL mechanism"}},
		{"CA file without TLS", []string{"--kafka-tls-ca-file", "/etc/ca.pem"}, []string{"TLS is not enabled"}},
		{"certificate without key", []string{"--kafka-tls", "--kafka-tls-cert-file", "/etc/client.pem"}, []string{"/etc/client.pem", "no key file"}},
		{"missing CA file", []string{"--kafka-tls", "--kafka-tls-ca-file", missing}, []string{missing, "no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append([]string{}, base...), tt.args...)
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), args, &stdout, &stderr)
			if err == nil {
				t.Fatalf("run(%q) = nil, want an error", args)
			}
			if code := exitCode(err); code != 2 {
				t.Errorf("exitCode(%v) = %d, want 2", err, code)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("run(%q) = %q, want it to contain %q", args, err, w)
				}
			}
			if strings.Contains(err.Error(), "kafka-s3cret") {
				t.Errorf("run(%q) = %q shows the password", args, err)
			}
		})
	}
}

// TestOtherSinksSecretFilesUnread checks that only --sink's broker's secret
// files are read: another broker's flags have no effect, and a file of its
// that is missing must not stop the relay.
func TestOtherSinksSecretFilesUnread(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	if _, err := parseRun(t, []string{"--pg-dsn", "postgres://h/db", "--sink=nats", "--kafka-sasl-password-file", missing, "--redis-password-file", missing}); err != nil {
		t.Errorf("--sink=nats with other brokers' missing secret files: %v, want no error", err)
	}
	_, err := parseRun(t, []string{"--pg-dsn", "postgres://h/db", "--sink=redis", "--redis-password-file", missing})
	if err == nil || !strings.Contains(err.Error(), "--redis-password-file") {
		t.Errorf("--sink=redis with its missing secret file: %v, want an error naming --redis-password-file", err)
	}
}
