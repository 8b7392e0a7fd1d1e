package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/internal/testpki"
)

// refuseWithin is how soon the relay must exit when the brokers or
// PostgreSQL refuse its credentials.
const refuseWithin = 15 * time.Second

// secretFile writes content to a file of its own and returns the path.
func secretFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// withPassword returns dsn with its user's password set to pass. The test
// clusters trust local connections, so any password is accepted, and the
// relay still holds it in its configuration.
func withPassword(t *testing.T, dsn, pass string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), pass)
	return u.String()
}

// consumerWith is e.consumer with opts added, for brokers that require TLS
// or SASL.
func (e *env) consumerWith(opts ...kgo.Opt) *consumer {
	e.t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(e.broker.ListenAddrs()...),
		kgo.ConsumeRegex(),
		kgo.ConsumeTopics(`^outbox\..*`),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.MetadataMinAge(100 * time.Millisecond),
		kgo.MetadataMaxAge(time.Second),
	}, opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(cl.Close)
	return &consumer{cl: cl}
}

// expectEvents fails t unless c reads n records within 30 seconds.
func expectEvents(t *testing.T, c *consumer, p *proc, n int) {
	t.Helper()
	got := 0
	for deadline := time.Now().Add(30 * time.Second); got < n && time.Now().Before(deadline); {
		recs, err := c.poll(t.Context(), time.Second)
		if err != nil {
			t.Log(err)
		}
		got += len(recs)
	}
	if got != n {
		t.Fatalf("consumed %d records, want %d\n%s", got, n, p.logText())
	}
}

// refused waits for p to exit because its configuration is refused and
// returns the exit code and its one "outbox-relay:" message.
func refused(t *testing.T, p *proc) (int, string) {
	t.Helper()
	code := p.waitExit(t, refuseWithin, "start; it should exit at start-up")
	var messages []string
	for line := range strings.SplitSeq(p.logText(), "\n") {
		if strings.HasPrefix(line, "outbox-relay:") {
			messages = append(messages, line)
		}
	}
	t.Logf("exit %d after %s: %s", code, time.Since(p.started).Round(time.Millisecond), strings.Join(messages, "\n"))
	if code == 0 {
		t.Errorf("exit code 0, want non-zero\n%s", p.logText())
	}
	if len(messages) != 1 {
		t.Fatalf("stderr holds %d outbox-relay: messages, want one\n%s", len(messages), p.logText())
	}
	return code, messages[0]
}

// sqlOn runs statements on the database at dsn and returns the first
// column of the last one's first row, as text ("" if it returns no rows).
func sqlOn(t *testing.T, dsn string, statements ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var out string
	for _, s := range statements {
		rows, err := conn.Query(ctx, s, pgx.QueryResultFormats{pgx.TextFormatCode})
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		out = ""
		if rows.Next() {
			if vals := rows.RawValues(); len(vals) > 0 {
				out = string(vals[0])
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	return out
}

// hides fails t if the relay's stderr shows any of secrets.
func hides(t *testing.T, p *proc, secrets ...string) {
	t.Helper()
	text := p.logText()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("stderr shows the secret %q:\n%s", s, text)
		}
	}
}

// TestSecuritySASL runs the relay against brokers that require SASL
// SCRAM-SHA-256, with the password and the DSN (which holds a PostgreSQL
// password) read from files, and checks that neither password is ever
// printed, even at debug level. The subtests run one at a time: each sets up
// its own database, and replication slot names are unique per server.
func TestSecuritySASL(t *testing.T) {
	const user, kafkaPass, pgPass = "relay", "s3cret", "pg-pa55word"
	newSASLEnv := func(t *testing.T) *env {
		return newEnvOn(t, withPassword(t, pgtest.NewDatabase(t), pgPass),
			kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", user, kafkaPass))
	}
	sasl := []string{"--kafka-sasl-mechanism", "SCRAM-SHA-256", "--kafka-sasl-username", user}

	t.Run("right password", func(t *testing.T) {
		e := newSASLEnv(t)
		args := append(sasl, "--kafka-sasl-password-file", secretFile(t, kafkaPass+"\n"),
			"--pg-dsn-file", secretFile(t, e.dsn+"\n"), "--log-level", "debug")
		// The DSN comes from its file only: the environment's is unset.
		p := e.startRun(args, "OUTBOX_RELAY_PG_DSN=")
		p.waitStreaming(30 * time.Second)
		insertEvents(t, e.dsn, "order", 1, 5)
		expectEvents(t, e.consumerWith(kgo.SASL(scram.Auth{User: user, Pass: kafkaPass}.AsSha256Mechanism())), p, 5)
		if code := p.term(30 * time.Second); code != 0 {
			t.Errorf("exit code after SIGTERM = %d, want 0\n%s", code, p.logText())
		}
		hides(t, p, kafkaPass, pgPass)
		if want := `"dsn":"postgres://postgres:xxxxx@`; !strings.Contains(p.logText(), want) {
			t.Errorf("stderr lacks the redacted DSN %s\n%s", want, p.logText())
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		e := newSASLEnv(t)
		const wrong = "wr0ng-pw"
		p := e.startRun(append(sasl, "--kafka-sasl-password-file", secretFile(t, wrong+"\n"), "--log-level", "debug"))
		_, msg := refused(t, p)
		// kfake closes the connection on a wrong password, where Kafka
		// answers SASL_AUTHENTICATION_FAILED (the next subtest): all the
		// relay can say is that no broker answered.
		if !strings.Contains(msg, "no kafka broker answered") {
			t.Errorf("message lacks %q", "no kafka broker answered")
		}
		hides(t, p, wrong, kafkaPass, pgPass)
	})

	t.Run("wrong password rejected as Kafka does", func(t *testing.T) {
		e := newSASLEnv(t)
		// Answer the final SCRAM message as a Kafka broker answers a
		// wrong proof (KIP-152); kfake itself closes the connection.
		e.broker.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
			e.broker.KeepControl()
			r := req.(*kmsg.SASLAuthenticateRequest)
			if !bytes.Contains(r.SASLAuthBytes, []byte(",p=")) {
				return nil, nil, false // the first message: kfake answers it
			}
			resp := r.ResponseKind().(*kmsg.SASLAuthenticateResponse)
			resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
			m := "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256"
			resp.ErrorMessage = &m
			return resp, nil, true
		})
		const wrong = "wr0ng-pw"
		p := e.startRun(append(sasl, "--kafka-sasl-password", wrong))
		_, msg := refused(t, p)
		for _, want := range []string{"SASL_AUTHENTICATION_FAILED", "invalid credentials with SASL mechanism SCRAM-SHA-256"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message lacks %q", want)
			}
		}
		hides(t, p, wrong, pgPass)
	})

	t.Run("unreachable brokers", func(t *testing.T) {
		e := newSASLEnv(t)
		p := e.startRun(append(sasl, "--kafka-sasl-password", kafkaPass, "--kafka-brokers", freeAddr(t), "--log-level", "debug"))
		_, msg := refused(t, p)
		if !strings.Contains(msg, "no kafka broker answered") {
			t.Errorf("message lacks %q", "no kafka broker answered")
		}
		hides(t, p, kafkaPass, pgPass)
	})

	t.Run("password and its file", func(t *testing.T) {
		e := newSASLEnv(t)
		p := e.startRun(append(sasl, "--kafka-sasl-password-file", secretFile(t, kafkaPass)), "OUTBOX_RELAY_KAFKA_SASL_PASSWORD="+kafkaPass)
		code, msg := refused(t, p)
		if code != 2 {
			t.Errorf("exit code %d, want 2", code)
		}
		if !strings.Contains(msg, "both set") {
			t.Errorf("message lacks %q", "both set")
		}
		hides(t, p, kafkaPass, pgPass)
	})
}

// testPKI is a certificate authority with a server certificate for
// 127.0.0.1 and localhost and a client certificate, as PEM files.
type testPKI struct {
	caFile, otherCAFile       string
	serverCertFile, serverKey string
	clientCertFile, clientKey string
	caPool                    *x509.CertPool
	serverCert, clientCert    tls.Certificate
}

// newTestPKI writes the files into a new directory that any user can read
// (PostgreSQL may run as another user), removed when t ends.
func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir, err := os.MkdirTemp("", "outbox-relay-pki-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tp, err := testpki.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{
		caFile:         tp.Path(testpki.CAFile),
		otherCAFile:    tp.Path(testpki.OtherCAFile),
		serverCertFile: tp.Path(testpki.ServerCertFile),
		serverKey:      tp.Path(testpki.ServerKeyFile),
		clientCertFile: tp.Path(testpki.ClientCertFile),
		clientKey:      tp.Path(testpki.ClientKeyFile),
		caPool:         tp.Roots,
		serverCert:     tp.Server,
		clientCert:     tp.Client,
	}
}

// TestSecurityKafkaMutualTLS runs the relay against brokers that require TLS
// and a client certificate, configured by the --kafka-tls flags.
func TestSecurityKafkaMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{pki.serverCert}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: pki.caPool, MinVersion: tls.VersionTLS12}
	e := newEnvOn(t, pgtest.NewDatabase(t), kfake.TLS(serverTLS))
	tlsArgs := []string{"--kafka-tls", "--kafka-tls-ca-file", pki.caFile}

	t.Run("client certificate", func(t *testing.T) {
		p := e.startRun(append(tlsArgs, "--kafka-tls-cert-file", pki.clientCertFile, "--kafka-tls-key-file", pki.clientKey))
		p.waitStreaming(30 * time.Second)
		insertEvents(t, e.dsn, "order", 1, 3)
		expectEvents(t, e.consumerWith(kgo.DialTLSConfig(&tls.Config{RootCAs: pki.caPool,
			Certificates: []tls.Certificate{pki.clientCert}, MinVersion: tls.VersionTLS12})), p, 3)
		if code := p.term(30 * time.Second); code != 0 {
			t.Errorf("exit code after SIGTERM = %d, want 0\n%s", code, p.logText())
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		_, msg := refused(t, e.startRun(tlsArgs))
		if !strings.Contains(msg, "certificate required") {
			t.Errorf("message lacks %q", "certificate required")
		}
	})
	t.Run("untrusted broker", func(t *testing.T) {
		_, msg := refused(t, e.startRun([]string{"--kafka-tls", "--kafka-tls-ca-file", pki.otherCAFile,
			"--kafka-tls-cert-file", pki.clientCertFile, "--kafka-tls-key-file", pki.clientKey}))
		if !strings.Contains(msg, "certificate signed by unknown authority") {
			t.Errorf("message lacks %q", "certificate signed by unknown authority")
		}
	})
	t.Run("missing CA file", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "ca.pem")
		code, msg := refused(t, e.startRun([]string{"--kafka-tls", "--kafka-tls-ca-file", missing}))
		if code != 2 || !strings.Contains(msg, missing) {
			t.Errorf("exit %d, message %q; want 2 and the file named", code, msg)
		}
	})
}

// TestSecurityPostgresTLS runs the relay on a PostgreSQL server with TLS,
// with sslmode=verify-full and sslrootcert in the DSN, and checks that the
// replication connection is encrypted.
func TestSecurityPostgresTLS(t *testing.T) {
	pki := newTestPKI(t)
	if os.Geteuid() == 0 {
		// pgtest runs the server as postgres, which must own its key.
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(pki.serverKey, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	c, err := pgtest.Start(t.Context(), pgtest.Options{Logf: t.Logf, Settings: map[string]string{
		"ssl": "on", "ssl_cert_file": pki.serverCertFile, "ssl_key_file": pki.serverKey,
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	e := newEnvOn(t, c.NewDatabase(t)) // setup runs without TLS (sslmode=disable)
	tlsDSN := func(ca string) string {
		u, err := url.Parse(e.dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword("postgres", "pg-pa55word")
		u.RawQuery = url.Values{"sslmode": {"verify-full"}, "sslrootcert": {ca}}.Encode()
		return u.String()
	}

	t.Run("verify-full", func(t *testing.T) {
		p := e.start("OUTBOX_RELAY_PG_DSN=" + tlsDSN(pki.caFile))
		p.waitStreaming(30 * time.Second)
		insertEvents(t, e.dsn, "order", 1, 3)
		expectEvents(t, e.consumer(), p, 3)
		ssl := sqlOn(t, e.dsn, `SELECT s.ssl::text || ' ' || coalesce(s.version, '') FROM pg_replication_slots r
			JOIN pg_stat_ssl s ON s.pid = r.active_pid WHERE r.slot_name = '`+e.slot+`'`)
		t.Logf("replication connection: ssl, version = %s", ssl)
		if !strings.HasPrefix(ssl, "true ") {
			t.Errorf("the replication connection does not use TLS: ssl, version = %q", ssl)
		}
		if code := p.term(30 * time.Second); code != 0 {
			t.Errorf("exit code after SIGTERM = %d, want 0\n%s", code, p.logText())
		}
		hides(t, p, "pg-pa55word")
	})
	t.Run("untrusted server", func(t *testing.T) {
		p := e.start("OUTBOX_RELAY_PG_DSN=" + tlsDSN(pki.otherCAFile))
		_, msg := refused(t, p)
		if !strings.Contains(msg, "certificate signed by unknown authority") {
			t.Errorf("message lacks %q", "certificate signed by unknown authority")
		}
		hides(t, p, "pg-pa55word")
	})
}

// TestPrivilegeLeastRole runs the relay as a role with only LOGIN,
// REPLICATION and CONNECT on the database, after setup ran as the admin:
// the relay needs neither ownership of the table or publication nor SELECT
// on the table.
func TestPrivilegeLeastRole(t *testing.T) {
	e := newEnv(t) // setup ran as postgres, the admin
	role := fmt.Sprintf("outbox_relay_%d", mrand.Uint32())
	db := sqlOn(t, e.dsn, "SELECT current_database()")
	ident := pgx.Identifier{role}.Sanitize()
	dbIdent := pgx.Identifier{db}.Sanitize()
	sqlOn(t, e.dsn,
		"CREATE ROLE "+ident+" LOGIN REPLICATION PASSWORD 'relay-pw'",
		// Only the relay's role may connect, and it may do nothing else:
		// no SELECT on the outbox, no USAGE on its schema.
		"REVOKE CONNECT, TEMPORARY ON DATABASE "+dbIdent+" FROM PUBLIC",
		"GRANT CONNECT ON DATABASE "+dbIdent+" TO "+ident,
		"REVOKE USAGE ON SCHEMA public FROM PUBLIC",
	)
	t.Cleanup(func() { sqlOn(t, e.dsn, "DROP OWNED BY "+ident, "DROP ROLE "+ident) })
	if can := sqlOn(t, e.dsn, "SELECT has_table_privilege('"+role+"', 'public.outbox', 'SELECT')"); can != "f" {
		t.Fatalf("role %s can SELECT from the outbox (%s); the test wants it not to", role, can)
	}
	u, err := url.Parse(e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, "relay-pw")
	relayDSN := u.String()

	p := e.start("OUTBOX_RELAY_PG_DSN=" + relayDSN)
	p.waitStreaming(30 * time.Second)
	insertEvents(t, e.dsn, "order", 1, 5)
	expectEvents(t, e.consumer(), p, 5)

	// status reads the slot as the same role.
	cmd := e.command(t.Context(), "status", "--json")
	cmd.Env = append(cmd.Env, "OUTBOX_RELAY_PG_DSN="+relayDSN)
	if r := runCmd(t, cmd, 30*time.Second); r.code != 0 {
		t.Errorf("status as %s: exit %d\n%s%s", role, r.code, r.stdout, r.stderr)
	} else {
		t.Logf("status as %s: %s", role, r.stdout)
	}
	if code := p.term(30 * time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0\n%s", code, p.logText())
	}
	hides(t, p, "relay-pw")
}
