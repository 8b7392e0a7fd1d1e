package redis

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	valid := Config{URL: "redis://127.0.0.1:6379/0"}
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		want []string // substrings of the error; none means valid
	}{
		{name: "minimal", edit: func(*Config) {}},
		{name: "everything set", edit: func(c *Config) {
			c.URL = "rediss://user:pw@redis.example:6380/2"
			c.Username, c.Password = "other", "secret"
			c.TLS = TLSConfig{ServerName: "redis.example"}
			c.DialTimeout, c.ReadTimeout, c.WriteTimeout = time.Second, time.Second, time.Second
			c.Stream = "events:{aggregate_type}:{event_type}:{aggregate_id}"
			c.DeadLetterStream = "dlq"
			c.MaxLen = 1000
			c.MaxMessageBytes = maxMessageBytes
			c.Delivery = delivery.Config{MaxBatch: 10, Senders: 1}
		}},
		{name: "no URL", edit: func(c *Config) { c.URL = "" }, want: []string{"no URL"}},
		{name: "other scheme", edit: func(c *Config) { c.URL = "http://127.0.0.1" }, want: []string{`scheme "http"`, "redis://"}},
		{name: "unparsable URL keeps its password out", edit: func(c *Config) { c.URL = "redis://u:topsecret@host:port" },
			want: []string{"cannot be parsed", "invalid port"}},
		{name: "bad database", edit: func(c *Config) { c.URL = "redis://u:topsecret@127.0.0.1/x" },
			want: []string{"redis://u:xxxxx@127.0.0.1/x", "invalid database number"}},
		{name: "query parameters", edit: func(c *Config) { c.URL = "redis://:topsecret@127.0.0.1/0?read_timeout=1s&db=2" },
			want: []string{"query parameters (db, read_timeout)", "remove them"}},
		{name: "TLS settings without rediss", edit: func(c *Config) { c.TLS = TLSConfig{CAFile: "ca.pem", InsecureSkipVerify: true} },
			want: []string{"TLS settings (a CA file, skipping verification)", "use rediss://"}},
		{name: "certificate without key", edit: func(c *Config) {
			c.URL = "rediss://127.0.0.1"
			c.TLS.CertFile = "client.pem"
		}, want: []string{"client.pem has no key file"}},
		{name: "key without certificate", edit: func(c *Config) {
			c.URL = "rediss://127.0.0.1"
			c.TLS.KeyFile = "client.key"
		}, want: []string{"client.key has no certificate file"}},
		{name: "CA with skip verify", edit: func(c *Config) {
			c.URL = "rediss://127.0.0.1"
			c.TLS = TLSConfig{CAFile: notPEM, InsecureSkipVerify: true}
		}, want: []string{"verification is skipped"}},
		{name: "missing CA file", edit: func(c *Config) {
			c.URL = "rediss://127.0.0.1"
			c.TLS.CAFile = filepath.Join(dir, "missing.pem")
		}, want: []string{"read TLS CA file", "missing.pem"}},
		{name: "CA file not PEM", edit: func(c *Config) {
			c.URL = "rediss://127.0.0.1"
			c.TLS.CAFile = notPEM
		}, want: []string{"holds no PEM certificate"}},
		{name: "missing client certificate", edit: func(c *Config) {
			c.URL = "rediss://127.0.0.1"
			c.TLS.CertFile, c.TLS.KeyFile = filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
		}, want: []string{"load TLS client certificate"}},
		{name: "unknown placeholder", edit: func(c *Config) { c.Stream = "outbox.{table}" }, want: []string{`unknown placeholder "{table}"`}},
		{name: "unclosed brace", edit: func(c *Config) { c.Stream = "outbox.{aggregate_type" }, want: []string{"is not a placeholder"}},
		{name: "dead-letter stream with a brace", edit: func(c *Config) { c.DeadLetterStream = "dlq.{aggregate_type}" }, want: []string{"fixed name"}},
		{name: "negative max length", edit: func(c *Config) { c.MaxLen = -1 }, want: []string{"max length is -1"}},
		{name: "max message bytes too small", edit: func(c *Config) { c.MaxMessageBytes = 10 }, want: []string{"max message bytes 10 is out of range"}},
		{name: "max message bytes too large", edit: func(c *Config) { c.MaxMessageBytes = maxMessageBytes + 1 }, want: []string{"out of range"}},
		{name: "negative timeouts", edit: func(c *Config) { c.DialTimeout, c.ReadTimeout, c.WriteTimeout = -1, -1, -1 },
			want: []string{"dial timeout -1ns", "read timeout -1ns", "write timeout -1ns"}},
		{name: "bad delivery", edit: func(c *Config) { c.Delivery.MaxBatch = -1 }, want: []string{"redis: delivery: max batch is -1"}},
		{name: "every error at once", edit: func(c *Config) {
			c.URL = ""
			c.MaxLen = -5
			c.Stream = "{x}"
		}, want: []string{"no URL", "max length is -5", `unknown placeholder "{x}"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid
			tc.edit(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate(%v): %v", c, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate(%v) = nil, want an error with %q", c, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate(%v) = %q, want it to hold %q", c, err, w)
				}
			}
			if strings.Contains(err.Error(), "topsecret") {
				t.Errorf("Validate(%v) = %q, which holds the password", c, err)
			}
		})
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		cfg                      Config
		addr, user, pass, server string
		db                       int
	}{
		{name: "URL credentials", cfg: Config{URL: "redis://u:p@h:7000/3"}, addr: "h:7000", user: "u", pass: "p", db: 3},
		{name: "fields override the URL", cfg: Config{URL: "redis://u:p@h/1", Username: "v", Password: "q"}, addr: "h:6379", user: "v", pass: "q", db: 1},
		{name: "password alone", cfg: Config{URL: "redis://h", Password: "q"}, addr: "h:6379", pass: "q"},
		{name: "TLS server name from the URL", cfg: Config{URL: "rediss://h.example:6380"}, addr: "h.example:6380", server: "h.example"},
		{name: "TLS server name set", cfg: Config{URL: "rediss://10.0.0.1:6380", TLS: TLSConfig{ServerName: "h.example"}}, addr: "10.0.0.1:6380", server: "h.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opt, err := tc.cfg.withDefaults().options()
			if err != nil {
				t.Fatal(err)
			}
			if opt.Addr != tc.addr || opt.Username != tc.user || opt.Password != tc.pass || opt.DB != tc.db {
				t.Errorf("options(%v): addr %q user %q password %q db %d, want %q %q %q %d",
					tc.cfg, opt.Addr, opt.Username, opt.Password, opt.DB, tc.addr, tc.user, tc.pass, tc.db)
			}
			switch {
			case tc.server == "" && opt.TLSConfig != nil:
				t.Errorf("options(%v) has TLS", tc.cfg)
			case tc.server != "" && (opt.TLSConfig == nil || opt.TLSConfig.ServerName != tc.server):
				t.Errorf("options(%v): TLS %+v, want server name %q", tc.cfg, opt.TLSConfig, tc.server)
			}
			if opt.MaxRetries != -1 {
				t.Errorf("options(%v): MaxRetries %d, want -1: the sink retries itself", tc.cfg, opt.MaxRetries)
			}
			if opt.DialTimeout != DefaultDialTimeout || opt.ReadTimeout != DefaultReadTimeout || opt.WriteTimeout != DefaultWriteTimeout {
				t.Errorf("options(%v): timeouts %s %s %s, want the defaults", tc.cfg, opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout)
			}
		})
	}
}

// TestRedaction checks that no way of printing a Config shows its
// passwords.
func TestRedaction(t *testing.T) {
	c := Config{URL: "redis://user:urlsecret@127.0.0.1:6379/0", Username: "user", Password: "fieldsecret"}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "redis", c)
	for _, tc := range []struct{ name, out string }{
		{"LogValue", buf.String()},
		{"%v", fmt.Sprintf("%v", c)},
		{"%+v", fmt.Sprintf("%+v", c)},
		{"%s", fmt.Sprintf("%s", c)},
		{"%#v", fmt.Sprintf("%#v", c)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Contains(tc.out, "urlsecret") || strings.Contains(tc.out, "fieldsecret") {
				t.Errorf("%s shows a password: %s", tc.name, tc.out)
			}
			if !strings.Contains(tc.out, "127.0.0.1:6379") || !strings.Contains(tc.out, redacted) {
				t.Errorf("%s = %s, want the address and %q", tc.name, tc.out, redacted)
			}
		})
	}
	if got := fmt.Sprintf("%#v", c); !strings.HasPrefix(got, "redis.Config{") {
		t.Errorf("%%#v = %s, want it to start with redis.Config{", got)
	}
}
