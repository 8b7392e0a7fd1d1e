package redis_test

import (
	"context"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outbox-relay/outbox-relay/sinks/redis"
	"github.com/outbox-relay/outbox-relay/sinks/redis/redistest"
)

// withPassword returns u with password (and username, when not empty) in
// it.
func withPassword(t *testing.T, u, username, password string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	p.User = url.UserPassword(username, password)
	return p.String()
}

// pingTimeout is the relay's bound on Ping at start.
const pingTimeout = 10 * time.Second

// TestPing checks what Ping says against real servers: nil when it
// answers, and otherwise what to check, never with the password.
func TestPing(t *testing.T) {
	plain := redistest.Start(t)
	stopped := redistest.Start(t)
	stopped.Stop(t)
	secured := redistest.StartWith(t, redistest.Options{Password: "right-password"})
	tlsSrv := redistest.StartWith(t, redistest.Options{TLS: true})
	mutual := redistest.StartWith(t, redistest.Options{TLS: true, ClientCerts: true})

	for _, tc := range []struct {
		name string
		cfg  redis.Config
		want string // "" means Ping succeeds
	}{
		{name: "answers", cfg: redis.Config{URL: plain.URL}},
		{name: "password", cfg: redis.Config{URL: secured.URL}},
		{name: "password field", cfg: redis.Config{URL: "redis://" + secured.Addr, Password: "right-password"}},
		{name: "TLS", cfg: redis.Config{URL: tlsSrv.URL, TLS: redis.TLSConfig{CAFile: tlsSrv.CAFile}}},
		{name: "mutual TLS", cfg: redis.Config{URL: mutual.URL, TLS: redis.TLSConfig{
			CAFile: mutual.CAFile, CertFile: mutual.ClientCertFile, KeyFile: mutual.ClientKeyFile}}},
		{name: "refused", cfg: redis.Config{URL: stopped.URL},
			want: "no Redis server answered at " + stopped.URL + " (connection refused); check that it is running and reachable, and the URL"},
		{name: "unknown host", cfg: redis.Config{URL: "redis://nosuchhost.invalid:6379/0"},
			want: "the host of redis://nosuchhost.invalid:6379/0 cannot be resolved"},
		{name: "wrong password", cfg: redis.Config{URL: withPassword(t, secured.URL, "", "wrong-password")},
			want: "refused the credentials (WRONGPASS"},
		{name: "unknown user", cfg: redis.Config{URL: withPassword(t, secured.URL, "nobody", "wrong-password")},
			want: "check the username and password"},
		{name: "no password", cfg: redis.Config{URL: "redis://" + secured.Addr},
			want: "requires authentication (NOAUTH"},
		{name: "untrusted certificate", cfg: redis.Config{URL: tlsSrv.URL},
			want: "is not trusted"},
		{name: "wrong server name", cfg: redis.Config{URL: tlsSrv.URL, TLS: redis.TLSConfig{CAFile: tlsSrv.CAFile, ServerName: "redis.example"}},
			want: "check the server name"},
		{name: "TLS to a plain server", cfg: redis.Config{URL: strings.Replace(plain.URL, "redis://", "rediss://", 1), TLS: redis.TLSConfig{InsecureSkipVerify: true}},
			want: "if the server does not use TLS, use redis://"},
		{name: "plain to a TLS server", cfg: redis.Config{URL: strings.Replace(tlsSrv.URL, "rediss://", "redis://", 1)},
			want: "if it requires TLS, use rediss://"},
		{name: "no client certificate", cfg: redis.Config{URL: mutual.URL, TLS: redis.TLSConfig{CAFile: mutual.CAFile}},
			want: "give the certificate and key files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.DialTimeout = 2 * time.Second
			cfg.ReadTimeout = 2 * time.Second
			s := newSink(t, nil, cfg, nil, nil)
			ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
			defer cancel()
			start := time.Now()
			err := s.Ping(ctx)
			took := time.Since(start)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Ping: %v", err)
			case tc.want == "":
				return
			case err == nil:
				t.Fatalf("Ping = nil, want an error with %q", tc.want)
			case !strings.Contains(err.Error(), tc.want):
				t.Errorf("Ping = %q, want it to hold %q", err, tc.want)
			}
			for _, secret := range []string{"right-password", "wrong-password"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("Ping = %q, which holds the password", err)
				}
			}
			t.Logf("Ping (%s): %v", took.Round(time.Millisecond), err)
		})
	}
}

// TestTLSPublish publishes over mutual TLS with a password.
func TestTLSPublish(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{TLS: true, ClientCerts: true, Password: "pw"})
	s := newSink(t, srv, redis.Config{TLS: redis.TLSConfig{CAFile: srv.CAFile, CertFile: srv.ClientCertFile, KeyFile: srv.ClientKeyFile}}, nil, nil)
	if err := s.Setup(testContext(t)); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	evs := events("Secure", 300, 7)
	d := newDones()
	d.publish(s, evs)
	d.wait(t)
	if f := d.failures(); len(f) > 0 {
		t.Fatal(f)
	}
	checkStored(t, srv, "outbox.*", evs)
}

// TestClientLogger checks that go-redis's own lines go to the logger given.
func TestClientLogger(t *testing.T) {
	srv := redistest.Start(t)
	srv.Stop(t)
	var l logs
	redis.ClientLogger(l.logger())
	defer redis.ClientLogger(nil)
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr, MaxRetries: -1, DialerRetries: 1})
	defer c.Close()
	if err := c.Ping(testContext(t)).Err(); err == nil {
		t.Fatal("PING of a stopped server succeeded")
	}
	r := l.waitFor(t, slog.LevelDebug, "failed to dial", "", "")
	if r.attrs["component"] != redis.Name {
		t.Errorf("go-redis line %q has component %q, want %q", r.msg, r.attrs["component"], redis.Name)
	}
}
