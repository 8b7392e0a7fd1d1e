package nats_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/nats"
	"github.com/outbox-relay/outbox-relay/sinks/nats/natstest"
)

// pingTimeout bounds a Ping that is to fail: the client tries a server
// again every 200ms in these tests.
const pingTimeout = 2 * time.Second

// certs is a CA and a certificate it signed for 127.0.0.1.
type certs struct {
	caFile string
	server tls.Certificate
}

// newCerts makes a CA and a server certificate for 127.0.0.1, and writes
// the CA's certificate to a file.
func newCerts(t *testing.T) certs {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, srvKey := key(), key()
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "natstest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certs{caFile: caFile, server: tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: srvKey}}
}

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
	c := newCerts(t)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{c.server}, MinVersion: tls.VersionTLS12}
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
			cfg:  nats.Config{TLS: nats.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CAFile: c.caFile}}},
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
