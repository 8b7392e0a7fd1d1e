package nats

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// creds returns the content of a .creds file with a user seed, and a JWT
// that only looks like one.
func creds(t *testing.T) string {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return "-----BEGIN NATS USER JWT-----\neyJhbGciOi.eyJqdGkiOi.c2lnbmF0dXJl\n------END NATS USER JWT------\n\n" +
		"************************* IMPORTANT *************************\n\n" +
		"-----BEGIN USER NKEY SEED-----\n" + string(seed) + "\n------END USER NKEY SEED------\n"
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := creds(t)
	for _, tt := range []struct {
		name    string
		cfg     Config
		wantErr []string // nil: valid
	}{
		{name: "Zero", cfg: Config{}},
		{name: "Full", cfg: Config{
			URL: "nats://a:4222, tls://b:4222", Name: "relay-1", Auth: AuthConfig{Credentials: good},
			Subject: "app.{aggregate_type}.{event_type}.{aggregate_id}", Stream: "APP", StreamSubjects: []string{"app.>"},
			DeadLetterSubject: "app-dlq", DeadLetterStream: "APP_DLQ", DuplicateWindow: 10 * time.Minute, Replicas: 3,
			MaxMessageBytes: 8 << 20, AckTimeout: time.Second, ReconnectWait: time.Second,
			Delivery: delivery.Config{MaxBatch: 10, Senders: 4},
		}},
		{name: "URLCredentials", cfg: Config{URL: "nats://relay:secret@db:4222"}},
		{name: "URLToken", cfg: Config{URL: "nats://s3cr3t@db:4222"}},
		{name: "URLScheme", cfg: Config{URL: "http://db:4222"}, wantErr: []string{`scheme "http"`}},
		{name: "URLNoHost", cfg: Config{URL: "nats://:4222"}, wantErr: []string{"names no host"}},
		{name: "URLEmptyEntry", cfg: Config{URL: "nats://a:4222,,nats://b:4222"}, wantErr: []string{"empty entry"}},
		{name: "URLUnparsable", cfg: Config{URL: "nats://relay:pass word%@db"}, wantErr: []string{`URL "xxxxx" cannot be parsed`}},
		{name: "UserWithoutPassword", cfg: Config{Auth: AuthConfig{Username: "relay"}}, wantErr: []string{`user "relay" has no password`}},
		{name: "PasswordWithoutUser", cfg: Config{Auth: AuthConfig{Password: "p"}}, wantErr: []string{"password is given without a username"}},
		{name: "TwoMethods", cfg: Config{Auth: AuthConfig{Token: "t", Credentials: good}}, wantErr: []string{"more than one"}},
		{name: "URLAndAuth", cfg: Config{URL: "nats://u:p@db:4222", Auth: AuthConfig{Token: "t"}}, wantErr: []string{"give them in one place"}},
		{name: "BadCredentials", cfg: Config{Auth: AuthConfig{Credentials: "hello"}}, wantErr: []string{"no user JWT", "no user nkey seed"}},
		{name: "TLSSettingsWithoutTLS", cfg: Config{TLS: TLSConfig{TLSFiles: delivery.TLSFiles{CAFile: notPEM}}}, wantErr: []string{"TLS is not enabled"}},
		{name: "TLSByURL", cfg: Config{URL: "tls://db:4222", TLS: TLSConfig{TLSFiles: delivery.TLSFiles{ServerName: "db"}}}},
		{name: "TLSCANotPEM", cfg: Config{TLS: TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CAFile: notPEM}}}, wantErr: []string{"holds no PEM certificate"}},
		{name: "TLSCAMissing", cfg: Config{TLS: TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CAFile: filepath.Join(dir, "none.pem")}}}, wantErr: []string{"none.pem"}},
		{name: "TLSCertWithoutKey", cfg: Config{TLS: TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CertFile: "c.pem"}}}, wantErr: []string{"has no key file"}},
		{name: "TLSSkipAndCA", cfg: Config{TLS: TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CAFile: notPEM, InsecureSkipVerify: true}}}, wantErr: []string{"one or the other"}},
		{name: "Template", cfg: Config{Subject: "outbox.{table}"}, wantErr: []string{"unknown placeholder"}},
		{name: "TemplateFirstPlaceholder", cfg: Config{Subject: "{aggregate_type}.x"}, wantErr: []string{"begins with a placeholder"}},
		{name: "TemplateFirstPlaceholderWithSubjects", cfg: Config{Subject: "{aggregate_type}.x", StreamSubjects: []string{"*.x"}}},
		{name: "StreamSubjectsDoNotCover", cfg: Config{StreamSubjects: []string{"outbox.order.*"}}, wantErr: []string{`do not cover "outbox.*.*"`}},
		{name: "StreamSubjectInvalid", cfg: Config{StreamSubjects: []string{"outbox.>.x"}}, wantErr: []string{"not a valid subject filter"}},
		{name: "DeadLetterSubjectWildcard", cfg: Config{DeadLetterSubject: "dlq.*"}, wantErr: []string{"dead-letter subject"}},
		{name: "DeadLetterAmongEvents", cfg: Config{DeadLetterSubject: "outbox.dlq"}, wantErr: []string{"would mix with events"}},
		{name: "StreamName", cfg: Config{Stream: "OUT.BOX"}, wantErr: []string{`stream name "OUT.BOX" holds`}},
		{name: "SameStreams", cfg: Config{Stream: "S", DeadLetterStream: "S"}, wantErr: []string{"give them different names"}},
		{name: "DuplicateWindow", cfg: Config{DuplicateWindow: time.Second, AckTimeout: 2 * time.Second}, wantErr: []string{"duplicate window 1s is not longer"}},
		{name: "Replicas", cfg: Config{Replicas: 7}, wantErr: []string{"replicas is 7"}},
		{name: "MaxMessageBytes", cfg: Config{MaxMessageBytes: 100}, wantErr: []string{"max message bytes 100"}},
		{name: "AckTimeout", cfg: Config{AckTimeout: time.Millisecond}, wantErr: []string{"too short"}},
		{name: "ReconnectWait", cfg: Config{ReconnectWait: -time.Second}, wantErr: []string{"reconnect wait"}},
		{name: "Delivery", cfg: Config{Delivery: delivery.Config{Senders: -1}}, wantErr: []string{"senders is -1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted %v", tt.cfg)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate = %q, want it to say %q", err, w)
				}
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	got := fmt.Sprint(c.URL, c.Subject, c.Stream, c.StreamSubjects, c.DeadLetterSubject, c.DeadLetterStream, c.DuplicateWindow, c.Delivery.Name)
	want := fmt.Sprint("nats://127.0.0.1:4222", "outbox.{aggregate_type}.{aggregate_id}", "OUTBOX", []string{"outbox.>"},
		"outbox-relay-dlq", "OUTBOX_RELAY_DLQ", 2*time.Minute, "nats")
	if got != want {
		t.Errorf("withDefaults = %s, want %s", got, want)
	}
	if c := (Config{Subject: "app.events.{event_type}"}).withDefaults(); len(c.StreamSubjects) != 1 || c.StreamSubjects[0] != "app.events.>" {
		t.Errorf("stream subjects of app.events.{event_type} = %q, want app.events.>", c.StreamSubjects)
	}
}

// TestSecretsHidden checks that no way of printing a Config shows a secret.
func TestSecretsHidden(t *testing.T) {
	good := creds(t)
	for _, cfg := range []Config{
		{URL: "nats://relay:hunter2@db:4222,nats://other:hunter2@db2:4222"},
		{URL: "nats://hunter2@db:4222"},
		{URL: "nats://relay:hunter2%@db"}, // does not parse
		{Auth: AuthConfig{Username: "relay", Password: "hunter2"}},
		{Auth: AuthConfig{Token: "hunter2"}},
		{Auth: AuthConfig{Credentials: good}},
	} {
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "nats", cfg)
		slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "nats", cfg)
		fmt.Fprintf(&buf, "%v %+v %s %#v %v", cfg, cfg, cfg, cfg, cfg.Validate())
		seed := good[strings.Index(good, "SU"):][:20]
		for _, secret := range []string{"hunter2", seed} {
			if strings.Contains(buf.String(), secret) {
				t.Errorf("printing %s shows a secret: %s", redactURL(cfg.URL), buf.String())
			}
		}
		if !strings.Contains(buf.String(), "db") && cfg.URL != "" && redactURL(cfg.URL) != redacted {
			t.Errorf("printing the config does not show the host: %s", buf.String())
		}
	}
}

func TestRedactURL(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"nats://db:4222", "nats://db:4222"},
		{"nats://relay:pw@db:4222", "nats://relay:xxxxx@db:4222"},
		{"nats://token@db:4222", "nats://xxxxx@db:4222"},
		{"nats://a:1@h1:1, nats://h2:2", "nats://a:xxxxx@h1:1,nats://h2:2"},
		{"nats://u:p%@h", "xxxxx"},
	} {
		if got := redactURL(tt.in); got != tt.want {
			t.Errorf("redactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
