package nats_test

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/testpki"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/nats"
	"github.com/outbox-relay/outbox-relay/sinks/nats/natstest"
)

// pingTimeout bounds a Ping that is to fail: the client tries a server
// again every 200ms in these tests.
const pingTimeout = 2 * time.Second

// freeURL returns the URL of a loopback port nothing listens on.
func freeURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "nats://" + addr
}

// TestPing checks that Ping succeeds against a server that answers with
// JetStream, and that each way of failing says what to check. New succeeds
// in every case: the servers are reached in the background.
func TestPing(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: each failing Ping waits its whole timeout, 2s")
	}
	pki, err := testpki.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	serverTLS := &tls.Config{Certificates: []tls.Certificate{pki.Server}, MinVersion: tls.VersionTLS12}
	for _, tt := range []struct {
		name string
		opts natstest.Options
		url  string // "" for the server's
		cfg  nats.Config
		want []string // in the error; none for success
	}{
		{name: "OK"},
		{
			name: "Refused",
			url:  "refused",
			want: []string{"no NATS server answered at nats://127.0.0.1:", "(connection refused); check that it is running and reachable, and the URL"},
		},
		{
			name: "UnknownHost",
			url:  "nats://no-such-host.invalid:4222",
			want: []string{"nats://no-such-host.invalid:4222", "check the URL"},
		},
		{
			name: "BadPassword",
			opts: natstest.Options{Username: "relay", Password: "right"},
			cfg:  nats.Config{Auth: nats.AuthConfig{Username: "relay", Password: "wrong"}},
			want: []string{"refused the credentials", "check the username and password"},
		},
		{
			name: "GoodPassword",
			opts: natstest.Options{Username: "relay", Password: "right"},
			cfg:  nats.Config{Auth: nats.AuthConfig{Username: "relay", Password: "right"}},
		},
		{
			name: "UntrustedCertificate",
			opts: natstest.Options{TLS: serverTLS},
			cfg:  nats.Config{TLS: nats.TLSConfig{Enable: true}},
			want: []string{"is not trusted", "give the CA file that signed it"},
		},
		{
			name: "TrustedCertificate",
			opts: natstest.Options{TLS: serverTLS},
			cfg:  nats.Config{TLS: nats.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CAFile: pki.Path(testpki.CAFile)}}},
		},
		{
			// The client turns TLS on by itself when the server requires
			// it, and then checks its certificate.
			name: "TLSRequired",
			opts: natstest.Options{TLS: serverTLS},
			want: []string{"is not trusted", "give the CA file that signed it"},
		},
		{
			name: "TLSNotOffered",
			cfg:  nats.Config{TLS: nats.TLSConfig{Enable: true}},
			want: []string{"does not offer it", "disable TLS"},
		},
		{
			name: "NoJetStream",
			opts: natstest.Options{NoJetStream: true},
			want: []string{"does not run JetStream", "start it with -js"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := natstest.StartWith(t, tt.opts)
			cfg := tt.cfg
			switch tt.url {
			case "":
			case "refused":
				cfg.URL = freeURL(t)
			default:
				cfg.URL = tt.url
			}
			s, _ := newSink(t, srv, cfg, nil)
			ctx, cancel := context.WithTimeout(t.Context(), pingTimeout)
			defer cancel()
			err := s.Ping(ctx)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Ping: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Ping succeeded")
			}
			t.Logf("Ping: %v", err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Ping error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "right") || strings.Contains(err.Error(), "wrong") {
				t.Errorf("Ping error %q shows a password", err)
			}
		})
	}
}

// TestPingRedactsURL checks that the URL's password appears in no error.
func TestPingRedactsURL(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: the failing Ping waits its whole timeout, 2s")
	}
	srv := natstest.StartWith(t, natstest.Options{Username: "relay", Password: "right"})
	s, _ := newSink(t, srv, nats.Config{URL: strings.Replace(srv.URL, "nats://", "nats://relay:s3cret@", 1)}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), pingTimeout)
	defer cancel()
	err := s.Ping(ctx)
	if err == nil {
		t.Fatal("Ping succeeded with a wrong password")
	}
	if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "nats://relay:xxxxx@127.0.0.1:") {
		t.Errorf("Ping error %q does not show the URL redacted", err)
	}
}
