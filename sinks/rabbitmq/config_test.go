package rabbitmq

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := Config{URL: "amqp://guest:guest@localhost:5672/"}
	for _, tt := range []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none means valid
	}{
		{"minimal", ok, nil},
		{"every field", Config{
			URL: "amqps://u:p@rabbit.example:5671/prod?heartbeat=5", Username: "relay", Password: "pw",
			TLS:      TLSConfig{ServerName: "rabbit.example"},
			Exchange: "events.{aggregate_type}", ExchangeType: "x-consistent-hash",
			RoutingKey: "{aggregate_type}.{event_type}.{aggregate_id}", DeadLetterQueue: "dead",
			DeadLetterQueueType: QueueQuorum, MaxMessageBytes: 1 << 20,
			Delivery: delivery.Config{MaxBatch: 10, Senders: 4},
		}, nil},
		{"no URL", Config{}, []string{"no URL; set it"}},
		{"scheme", Config{URL: "http://localhost"}, []string{"is not valid", "amqps://"}},
		{"bad URL hides the password", Config{URL: "amqp://u:secret@host:port/"}, []string{"is not valid"}},
		{"TLS in the URL", Config{URL: "amqps://host/?cacertfile=/ca.pem"}, []string{"give them as the sink's TLS settings"}},
		{"unknown placeholder", Config{URL: ok.URL, Exchange: "{table}"}, []string{`unknown placeholder "{table}"`, "{aggregate_type} and {event_type}"}},
		{"aggregate ID in the exchange", Config{URL: ok.URL, Exchange: "x.{aggregate_id}"}, []string{`unknown placeholder "{aggregate_id}"`}},
		{"unclosed placeholder", Config{URL: ok.URL, RoutingKey: "{aggregate_type"}, []string{"is not closed"}},
		{"long literal", Config{URL: ok.URL, RoutingKey: strings.Repeat("k", 256)}, []string{"256 bytes besides placeholders"}},
		{"exchange type", Config{URL: ok.URL, ExchangeType: "rabbit"}, []string{`exchange type "rabbit" is unknown`}},
		{"dead-letter queue reserved", Config{URL: ok.URL, DeadLetterQueue: "amq.dead"}, []string{"not starting with amq."}},
		{"dead-letter queue type", Config{URL: ok.URL, DeadLetterQueueType: "stream"}, []string{`dead-letter queue type "stream" is unknown`}},
		{"message size small", Config{URL: ok.URL, MaxMessageBytes: 100}, []string{"max message bytes 100 is out of range"}},
		{"message size large", Config{URL: ok.URL, MaxMessageBytes: 1 << 30}, []string{"out of range"}},
		{"TLS settings without TLS", Config{URL: ok.URL, TLS: TLSConfig{CAFile: "/ca.pem"}}, []string{"the URL is amqp://; use amqps://"}},
		{"certificate without key", Config{URL: "amqps://host/", TLS: TLSConfig{CertFile: "/c.pem"}}, []string{"has no key file"}},
		{"key without certificate", Config{URL: "amqps://host/", TLS: TLSConfig{KeyFile: "/k.pem"}}, []string{"has no certificate file"}},
		{"CA and skip", Config{URL: "amqps://host/", TLS: TLSConfig{CAFile: notPEM, InsecureSkipVerify: true}}, []string{"use one or the other"}},
		{"CA missing", Config{URL: "amqps://host/", TLS: TLSConfig{CAFile: filepath.Join(dir, "none.pem")}}, []string{"read TLS CA file", "none.pem"}},
		{"CA not PEM", Config{URL: "amqps://host/", TLS: TLSConfig{CAFile: notPEM}}, []string{"holds no PEM certificate"}},
		{"delivery", Config{URL: ok.URL, Delivery: delivery.Config{Senders: -1}}, []string{"senders is -1"}},
		{"several at once", Config{Exchange: "{x}", MaxMessageBytes: -1}, []string{"no URL", "unknown placeholder", "out of range"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error with %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v, want it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("Validate() = %v, holds the password", err)
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	got := Config{URL: "amqp://localhost/"}.withDefaults()
	want := Config{
		URL:                 "amqp://localhost/",
		Exchange:            DefaultExchange,
		ExchangeType:        DefaultExchangeType,
		RoutingKey:          DefaultRoutingKey,
		DeadLetterQueue:     DefaultDeadLetterQueue,
		DeadLetterQueueType: QueueClassic,
		MaxMessageBytes:     16 << 20,
		UnroutableGrace:     30 * time.Second,
		Delivery: delivery.Config{Name: Name, MaxBatch: delivery.DefaultMaxBatch, Senders: delivery.DefaultSenders,
			RetryMin: delivery.DefaultRetryMin, RetryMax: delivery.DefaultRetryMax},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("withDefaults() (-want +got):\n%s", diff)
	}
}

// TestSecretsRedacted checks that no way of printing or logging a Config
// shows its passwords.
func TestSecretsRedacted(t *testing.T) {
	cfg := Config{URL: "amqps://relay:url-secret@rabbit.example:5671/prod", Password: "field-secret", TLS: TLSConfig{CAFile: "/ca.pem"}}
	uri, err := cfg.uri()
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "rabbitmq", cfg)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "rabbitmq", cfg)
	for name, out := range map[string]string{
		"slog":      logged.String(),
		"%v":        fmt.Sprintf("%v", cfg),
		"%+v":       fmt.Sprintf("%+v", cfg),
		"%#v":       fmt.Sprintf("%#v", cfg),
		"%s":        fmt.Sprintf("%s", cfg),
		"errors":    Config{URL: cfg.URL, Exchange: "{x}"}.Validate().Error(),
		"address":   address(uri),
		"redaction": cfg.redactedURL(),
	} {
		if strings.Contains(out, "secret") {
			t.Errorf("%s shows a password: %s", name, out)
		}
	}
	if !strings.Contains(logged.String(), "rabbit.example") || !strings.Contains(logged.String(), "ca.pem") {
		t.Errorf("the log line lacks the host or the CA file: %s", logged.String())
	}
}

func TestURICredentials(t *testing.T) {
	for _, tt := range []struct {
		name           string
		cfg            Config
		user, password string
	}{
		{"from the URL", Config{URL: "amqp://a:b@h/"}, "a", "b"},
		{"guest by default", Config{URL: "amqp://h/"}, "guest", "guest"},
		{"fields win", Config{URL: "amqp://a:b@h/", Username: "c", Password: "d"}, "c", "d"},
		{"password only", Config{URL: "amqp://a@h/", Password: "from-file"}, "a", "from-file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			uri, err := tt.cfg.uri()
			if err != nil {
				t.Fatal(err)
			}
			if uri.Username != tt.user || uri.Password != tt.password {
				t.Errorf("uri() user %q password %q, want %q %q", uri.Username, uri.Password, tt.user, tt.password)
			}
		})
	}
}
