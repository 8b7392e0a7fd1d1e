package kafka_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/outbox-relay/outbox-relay/internal/testpki"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

// pingTimeout bounds a Ping expected to fail: long enough for a TLS or SASL
// handshake on a loaded machine, short of franz-go's 10s dial timeout.
const pingTimeout = 5 * time.Second

// publishOne publishes one event through s and waits for its done.
func publishOne(t *testing.T, s *kafka.Sink, typ string) {
	t.Helper()
	ctx := testContext(t)
	ev := event(typ, "a-1", 1)
	errc := make(chan error, 1)
	s.Publish(ctx, ev, func(err error) { errc <- err })
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("publish %s: %v", ev.ID, err)
	}
}

// consumeOne reads one record of topic with a client made with opts, as an
// independent consumer with the same credentials would.
func consumeOne(t *testing.T, c *kfake.Cluster, topic string, opts ...kgo.Opt) *kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	}, opts...)...)
	if err != nil {
		t.Fatalf("create consumer: %v", err)
	}
	defer cl.Close()
	ctx := testContext(t)
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("no record on %s before the timeout", topic)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Fatalf("consume %s/%d: %v", topic, p, err)
		})
		if recs := fs.Records(); len(recs) > 0 {
			return recs[0]
		}
	}
}

// pingErr creates a Sink for cfg on c and returns what Ping says.
func pingErr(t *testing.T, c *kfake.Cluster, cfg kafka.Config) error {
	t.Helper()
	s := newSink(t, c, cfg, nil)
	ctx, cancel := context.WithTimeout(t.Context(), pingTimeout)
	defer cancel()
	return s.Ping(ctx)
}

func TestSASL(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		mechanism string
		client    func(user, pass string) sasl.Mechanism
	}{
		{kafka.SASLPlain, func(u, p string) sasl.Mechanism { return plain.Auth{User: u, Pass: p}.AsMechanism() }},
		{kafka.SASLSCRAMSHA256, func(u, p string) sasl.Mechanism { return scram.Auth{User: u, Pass: p}.AsSha256Mechanism() }},
		{kafka.SASLSCRAMSHA512, func(u, p string) sasl.Mechanism { return scram.Auth{User: u, Pass: p}.AsSha512Mechanism() }},
	} {
		t.Run(tt.mechanism, func(t *testing.T) {
			t.Parallel()
			const user, pass = "relay", "s3cret-pw"
			c := newCluster(t, kfake.EnableSASL(), kfake.Superuser(tt.mechanism, user, pass),
				kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(1))

			t.Run("right password", func(t *testing.T) {
				// The mechanism is matched in any case.
				cfg := kafka.Config{AllowAutoTopicCreation: true, SASL: kafka.SASLConfig{
					Mechanism: strings.ToLower(tt.mechanism), Username: user, Password: pass}}
				s := newSink(t, c, cfg, nil)
				if err := s.Ping(testContext(t)); err != nil {
					t.Fatalf("Ping with SASL %s = %v, want nil", tt.mechanism, err)
				}
				publishOne(t, s, "sasl")
				r := consumeOne(t, c, "outbox.sasl", kgo.SASL(tt.client(user, pass)))
				if string(r.Key) != "a-1" {
					t.Errorf("consumed record key %q, want a-1", r.Key)
				}
			})

			t.Run("wrong password", func(t *testing.T) {
				// kfake closes the connection on a wrong password, so
				// the client sees only EOF; a Kafka broker answers
				// SASL_AUTHENTICATION_FAILED, which
				// TestSASLAuthenticationFailed checks.
				const wrong = "not-the-pw"
				err := pingErr(t, c, kafka.Config{SASL: kafka.SASLConfig{Mechanism: tt.mechanism, Username: user, Password: wrong}})
				if err == nil {
					t.Fatal("Ping with a wrong password = nil, want an error")
				}
				t.Logf("Ping: %v", err)
				if strings.Contains(err.Error(), wrong) {
					t.Errorf("Ping error %q shows the password", err)
				}
			})

			t.Run("no SASL", func(t *testing.T) {
				err := pingErr(t, c, kafka.Config{})
				if err == nil || !strings.Contains(err.Error(), "SASL") {
					t.Errorf("Ping without SASL = %v, want an error that names SASL", err)
				}
			})
		})
	}
}

// TestSASLAuthenticationFailed checks the error for a wrong password as a
// Kafka broker reports it. kfake closes the connection instead, so the test
// answers the PLAIN authentication itself, as Kafka does (KIP-152): with
// SASL_AUTHENTICATION_FAILED and a message.
func TestSASLAuthenticationFailed(t *testing.T) {
	t.Parallel()
	const user, pass, wrong = "relay", "s3cret-pw", "not-the-pw"
	c := newCluster(t, kfake.EnableSASL(), kfake.Superuser(kafka.SASLPlain, user, pass))
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.SASLAuthenticateRequest)
		if parts := bytes.Split(r.SASLAuthBytes, []byte{0}); len(parts) == 3 && string(parts[2]) == pass {
			return nil, nil, false // kfake authenticates it
		}
		resp := r.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "Authentication failed: Invalid username or password"
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
	if err := pingErr(t, c, kafka.Config{SASL: kafka.SASLConfig{Mechanism: kafka.SASLPlain, Username: user, Password: pass}}); err != nil {
		t.Fatalf("Ping with the right password = %v, want nil", err)
	}
	err := pingErr(t, c, kafka.Config{SASL: kafka.SASLConfig{Mechanism: kafka.SASLPlain, Username: user, Password: wrong}})
	if err == nil {
		t.Fatal("Ping with a wrong password = nil, want an error")
	}
	t.Logf("Ping: %v", err)
	if !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Errorf("Ping error %v does not wrap kerr.SaslAuthenticationFailed", err)
	}
	for _, want := range []string{"SASL_AUTHENTICATION_FAILED", "Invalid username or password"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Ping error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), wrong) {
		t.Errorf("Ping error %q shows the password", err)
	}
}

// TestSASLOAuthBearer checks what the client sends for OAUTHBEARER. kfake
// implements only PLAIN and SCRAM, so the test answers the SASL requests
// itself, as a broker whose token validator accepts one token would,
// including the SASL_AUTHENTICATION_FAILED answer a real broker gives.
func TestSASLOAuthBearer(t *testing.T) {
	t.Parallel()
	const token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJyZWxheSJ9."
	c := newCluster(t, kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(1))
	authenticated := make(chan string, 10)
	c.ControlKey(int16(kmsg.SASLHandshake), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.SASLHandshakeRequest)
		resp := r.ResponseKind().(*kmsg.SASLHandshakeResponse)
		if r.Mechanism != kafka.SASLOAuthBearer {
			resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		}
		resp.SupportedMechanisms = []string{kafka.SASLOAuthBearer}
		return resp, nil, true
	})
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.SASLAuthenticateRequest)
		resp := r.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		// RFC 7628: gs2 header, then \x01-separated key=value pairs.
		got := ""
		for _, kv := range bytes.Split(r.SASLAuthBytes, []byte{1}) {
			if v, ok := bytes.CutPrefix(kv, []byte("auth=Bearer ")); ok {
				got = string(v)
			}
		}
		authenticated <- got
		if got != token {
			resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
			msg := "Authentication failed: invalid token"
			resp.ErrorMessage = &msg
		}
		return resp, nil, true
	})

	s := newSink(t, c, kafka.Config{AllowAutoTopicCreation: true, SASL: kafka.SASLConfig{Mechanism: "OAUTHBEARER", Token: token}}, nil)
	if err := s.Ping(testContext(t)); err != nil {
		t.Fatalf("Ping with OAUTHBEARER = %v, want nil", err)
	}
	if got := <-authenticated; got != token {
		t.Errorf("client sent bearer token %q, want %q", got, token)
	}
	publishOne(t, s, "oauth")

	const wrong = "expired.token.value"
	err := pingErr(t, c, kafka.Config{SASL: kafka.SASLConfig{Mechanism: kafka.SASLOAuthBearer, Token: wrong}})
	if err == nil {
		t.Fatal("Ping with a rejected token = nil, want an error")
	}
	t.Logf("Ping: %v", err)
	if !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Errorf("Ping error %v does not wrap kerr.SaslAuthenticationFailed", err)
	}
	if !strings.Contains(err.Error(), "SASL") || !strings.Contains(err.Error(), "Authentication failed") {
		t.Errorf("Ping error %q does not say SASL authentication failed", err)
	}
	if strings.Contains(err.Error(), wrong) {
		t.Errorf("Ping error %q shows the token", err)
	}
}

// pki is a test certificate authority with a server and a client
// certificate it signed, as PEM files in a temporary directory.
type pki struct {
	dir            string
	caFile         string
	otherCAFile    string // a CA that signed neither certificate
	caPool         *x509.CertPool
	serverCert     tls.Certificate // for localhost, kafka.test and 127.0.0.1
	clientCert     tls.Certificate
	clientCertFile string
	clientKeyFile  string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	tp, err := testpki.Write(t.TempDir(), "kafka.test")
	if err != nil {
		t.Fatal(err)
	}
	return &pki{
		dir:            tp.Dir,
		caFile:         tp.Path(testpki.CAFile),
		otherCAFile:    tp.Path(testpki.OtherCAFile),
		caPool:         tp.Roots,
		serverCert:     tp.Server,
		clientCert:     tp.Client,
		clientCertFile: tp.Path(testpki.ClientCertFile),
		clientKeyFile:  tp.Path(testpki.ClientKeyFile),
	}
}

// serverTLS returns the brokers' TLS configuration; clientAuth says whether
// they require a client certificate signed by the CA.
func (p *pki) serverTLS(clientAuth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.serverCert},
		ClientAuth:   clientAuth,
		ClientCAs:    p.caPool,
		MinVersion:   tls.VersionTLS12,
	}
}

// isCertificateError reports whether err is a failed verification of the
// broker's certificate.
func isCertificateError(err error) bool {
	var verr *tls.CertificateVerificationError
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	return errors.As(err, &verr) || errors.As(err, &uerr) || errors.As(err, &herr)
}

func TestTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	c := newCluster(t, kfake.TLS(p.serverTLS(tls.NoClientCert)), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(1))

	t.Run("trusted CA", func(t *testing.T) {
		s := newSink(t, c, kafka.Config{AllowAutoTopicCreation: true, TLS: kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CAFile: p.caFile}}}, nil)
		if err := s.Ping(testContext(t)); err != nil {
			t.Fatalf("Ping over TLS with the CA = %v, want nil", err)
		}
		publishOne(t, s, "tls")
		r := consumeOne(t, c, "outbox.tls", kgo.DialTLSConfig(&tls.Config{RootCAs: p.caPool, MinVersion: tls.VersionTLS12}))
		if string(r.Key) != "a-1" {
			t.Errorf("consumed record key %q, want a-1", r.Key)
		}
	})
	t.Run("server name", func(t *testing.T) {
		s := newSink(t, c, kafka.Config{TLS: kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CAFile: p.caFile, ServerName: "kafka.test"}}}, nil)
		if err := s.Ping(testContext(t)); err != nil {
			t.Fatalf("Ping with server name kafka.test = %v, want nil", err)
		}
	})
	t.Run("skip verification", func(t *testing.T) {
		s := newSink(t, c, kafka.Config{TLS: kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{InsecureSkipVerify: true}}}, nil)
		if err := s.Ping(testContext(t)); err != nil {
			t.Fatalf("Ping skipping verification = %v, want nil", err)
		}
	})

	for _, tt := range []struct {
		name string
		tls  kafka.TLSConfig
	}{
		{"system roots", kafka.TLSConfig{Enable: true}},
		{"another CA", kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CAFile: p.otherCAFile}}},
		{"wrong server name", kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CAFile: p.caFile, ServerName: "other.test"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := pingErr(t, c, kafka.Config{TLS: tt.tls})
			t.Logf("Ping: %v", err)
			if err == nil || !isCertificateError(err) || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("Ping = %v, want a certificate verification error", err)
			}
		})
	}

	t.Run("plaintext", func(t *testing.T) {
		err := pingErr(t, c, kafka.Config{})
		t.Logf("Ping: %v", err)
		if err == nil || !strings.Contains(err.Error(), "TLS") {
			t.Errorf("Ping without TLS to a TLS broker = %v, want an error that names TLS", err)
		}
	})
}

func TestMutualTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	c := newCluster(t, kfake.TLS(p.serverTLS(tls.RequireAndVerifyClientCert)), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(1))

	s := newSink(t, c, kafka.Config{AllowAutoTopicCreation: true, TLS: kafka.TLSConfig{Enable: true,
		TLSFiles: delivery.TLSFiles{CAFile: p.caFile, CertFile: p.clientCertFile, KeyFile: p.clientKeyFile}}}, nil)
	if err := s.Ping(testContext(t)); err != nil {
		t.Fatalf("Ping with a client certificate = %v, want nil", err)
	}
	publishOne(t, s, "mtls")
	consumeOne(t, c, "outbox.mtls", kgo.DialTLSConfig(&tls.Config{
		RootCAs: p.caPool, Certificates: []tls.Certificate{p.clientCert}, MinVersion: tls.VersionTLS12}))

	err := pingErr(t, c, kafka.Config{TLS: kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CAFile: p.caFile}}})
	t.Logf("Ping: %v", err)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Ping without a client certificate = %v, want an error about the certificate", err)
	}
}

func TestTLSValidate(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	notPEM := filepath.Join(p.dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(p.dir, "missing.pem")
	unreadable := filepath.Join(p.dir, "unreadable.pem")
	if err := os.Mkdir(unreadable, 0o700); err != nil { // reading a directory fails, even as root
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		tls      kafka.TLSConfig
		mentions []string // empty: valid
	}{
		{"off", kafka.TLSConfig{}, nil},
		{"system roots", kafka.TLSConfig{Enable: true}, nil},
		{"CA", kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CAFile: p.caFile}}, nil},
		{"client certificate", kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CAFile: p.caFile, CertFile: p.clientCertFile, KeyFile: p.clientKeyFile}}, nil},
		{"skip verification", kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{InsecureSkipVerify: true}}, nil},
		{"CA file without TLS", kafka.TLSConfig{TLSFiles: delivery.TLSFiles{CAFile: p.caFile}}, []string{"TLS is not enabled", "a CA file"}},
		{"server name without TLS", kafka.TLSConfig{TLSFiles: delivery.TLSFiles{ServerName: "kafka"}}, []string{"TLS is not enabled", "a server name"}},
		{"certificate without key", kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CertFile: p.clientCertFile}}, []string{p.clientCertFile, "no key file"}},
		{"key without certificate", kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{KeyFile: p.clientKeyFile}}, []string{p.clientKeyFile, "no certificate file"}},
		{"CA and skip verification", kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CAFile: p.caFile, InsecureSkipVerify: true}}, []string{"one or the other"}},
		{"missing CA file", kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CAFile: missing}}, []string{missing, "no such file"}},
		{"unreadable CA file", kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CAFile: unreadable}}, []string{unreadable}},
		{"CA file not PEM", kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CAFile: notPEM}}, []string{notPEM, "no PEM certificate"}},
		{"missing key file", kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CertFile: p.clientCertFile, KeyFile: missing}}, []string{missing, "no such file"}},
		{"certificate and key swapped", kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CertFile: p.clientKeyFile, KeyFile: p.clientCertFile}}, []string{p.clientKeyFile, p.clientCertFile}},
		{"key of another certificate", kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CertFile: p.caFile, KeyFile: p.clientKeyFile}}, []string{p.caFile, "does not match"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := kafka.Config{Brokers: []string{"localhost:9092"}, TLS: tt.tls}
			err := cfg.Validate()
			if len(tt.mentions) == 0 {
				if err != nil {
					t.Errorf("Validate(%+v) = %v, want nil", tt.tls, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate(%+v) = nil, want an error", tt.tls)
			}
			for _, m := range tt.mentions {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("Validate(%+v) = %q, want it to mention %q", tt.tls, err, m)
				}
			}
			// New rejects what Validate rejects, with the same message.
			if _, nerr := kafka.New(cfg, nil, nil); nerr == nil || nerr.Error() != err.Error() {
				t.Errorf("New = %v, want %v", nerr, err)
			}
		})
	}
}

func TestSASLValidate(t *testing.T) {
	t.Parallel()
	const secret = "pa55-w0rd-value"
	tests := []struct {
		name     string
		sasl     kafka.SASLConfig
		mentions []string // empty: valid
	}{
		{"off", kafka.SASLConfig{}, nil},
		{"plain", kafka.SASLConfig{Mechanism: "PLAIN", Username: "u", Password: secret}, nil},
		{"scram lower case", kafka.SASLConfig{Mechanism: "scram-sha-512", Username: "u", Password: secret}, nil},
		{"oauthbearer", kafka.SASLConfig{Mechanism: "OAUTHBEARER", Token: secret}, nil},
		{"unknown mechanism", kafka.SASLConfig{Mechanism: "GSSAPI", Username: "u", Password: secret}, []string{`"GSSAPI" is unknown`, "SCRAM-SHA-256"}},
		{"no username", kafka.SASLConfig{Mechanism: "SCRAM-SHA-256", Password: secret}, []string{"SCRAM-SHA-256 needs a username"}},
		{"no password", kafka.SASLConfig{Mechanism: "PLAIN", Username: "u"}, []string{"PLAIN needs a password"}},
		{"neither", kafka.SASLConfig{Mechanism: "SCRAM-SHA-512"}, []string{"needs a username", "needs a password"}},
		{"token for scram", kafka.SASLConfig{Mechanism: "SCRAM-SHA-256", Username: "u", Password: "p", Token: secret}, []string{"token is given", "OAUTHBEARER"}},
		{"no token", kafka.SASLConfig{Mechanism: "OAUTHBEARER"}, []string{"OAUTHBEARER needs a token"}},
		{"password for oauthbearer", kafka.SASLConfig{Mechanism: "OAUTHBEARER", Token: "t", Password: secret}, []string{"sends only a token"}},
		{"credentials without mechanism", kafka.SASLConfig{Username: "u", Password: secret}, []string{"no SASL mechanism"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := kafka.Config{Brokers: []string{"localhost:9092"}, SASL: tt.sasl}.Validate()
			if len(tt.mentions) == 0 {
				if err != nil {
					t.Errorf("Validate(%v) = %v, want nil", tt.sasl, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate(%v) = nil, want an error", tt.sasl)
			}
			for _, m := range tt.mentions {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("Validate(%v) = %q, want it to mention %q", tt.sasl, err, m)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("Validate error %q shows the secret", err)
			}
		})
	}
}

// TestConfigHidesSecrets checks every way a Config reaches a log line or a
// message: slog (JSON and text, directly and nested), and fmt's verbs.
func TestConfigHidesSecrets(t *testing.T) {
	t.Parallel()
	const password, token = "hunter2-password", "bearer-token-value"
	cfgs := map[string]kafka.Config{
		"scram": {Brokers: []string{"b:9092"}, TLS: kafka.TLSConfig{Enable: true, TLSFiles: delivery.TLSFiles{CAFile: "/etc/ca.pem"}},
			SASL: kafka.SASLConfig{Mechanism: "SCRAM-SHA-256", Username: "relay", Password: password}},
		"oauthbearer": {Brokers: []string{"b:9092"}, SASL: kafka.SASLConfig{Mechanism: "OAUTHBEARER", Token: token}},
	}
	for name, cfg := range cfgs {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "kafka", cfg, "sasl", cfg.SASL)
			slog.New(slog.NewTextHandler(&buf, nil)).Info("starting", "kafka", cfg, "sasl", cfg.SASL)
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
				fmt.Fprintf(&buf, verb+"\n", cfg)
				fmt.Fprintf(&buf, verb+"\n", cfg.SASL)
				fmt.Fprintf(&buf, verb+"\n", &cfg)
			}
			out := buf.String()
			t.Log(out)
			for _, secret := range []string{password, token} {
				if strings.Contains(out, secret) {
					t.Errorf("output shows the secret %q:\n%s", secret, out)
				}
			}
			if !strings.Contains(out, `"mechanism":"`+cfg.SASL.Mechanism+`"`) {
				t.Errorf("JSON log lacks the mechanism:\n%s", out)
			}
		})
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "kafka", cfgs["scram"])
	for _, want := range []string{`"username":"relay"`, `"ca_file":"/etc/ca.pem"`, `"brokers":["b:9092"]`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("JSON log %s lacks %s", buf.String(), want)
		}
	}
}
