package redis

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// reply is an error reply as go-redis hands it over: an error with a
// RedisError method.
type reply string

func (r reply) Error() string { return string(r) }

func (reply) RedisError() {}

var _ goredis.Error = reply("")

func TestClassify(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		name      string
		err       error
		permanent bool
	}{
		{"WRONGTYPE", reply("WRONGTYPE Operation against a key holding the wrong kind of value"), true},
		{"WRONGTYPE wrapped", fmt.Errorf("add event e to stream %q: %w", "s", reply("WRONGTYPE Operation against a key")), true},
		{"LOADING", reply("LOADING Redis is loading the dataset in memory"), false},
		{"BUSY", reply("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."), false},
		{"OOM", reply("OOM command not allowed when used memory > 'maxmemory'."), false},
		{"READONLY", reply("READONLY You can't write against a read only replica."), false},
		{"MASTERDOWN", reply("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."), false},
		{"TRYAGAIN", reply("TRYAGAIN Multiple keys request during rehashing of slot"), false},
		{"CLUSTERDOWN", reply("CLUSTERDOWN The cluster is down"), false},
		{"NOREPLICAS", reply("NOREPLICAS Not enough good replicas to write."), false},
		{"MISCONF", reply("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk."), false},
		{"MOVED", reply("MOVED 3999 127.0.0.1:6381"), false},
		{"ASK", reply("ASK 3999 127.0.0.1:6381"), false},
		{"NOAUTH", reply("NOAUTH Authentication required."), false},
		{"WRONGPASS", reply("WRONGPASS invalid username-password pair or user is disabled."), false},
		{"NOPERM", reply("NOPERM this user has no permissions to access one of the keys used as arguments"), false},
		{"ERR", reply("ERR unknown command 'XADD'"), false},
		{"a message naming WRONGTYPE is not a reply", errors.New("WRONGTYPE in a plain error"), false},
		{"connection refused", refused, false},
		{"EOF", io.EOF, false},
		{"timeout", &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, false},
		{"context", context.DeadlineExceeded, false},
		{"closed client", goredis.ErrClosed, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reason, permanent := classify(tc.err)
			if permanent != tc.permanent {
				t.Errorf("classify(%v) = %q, %v; want permanent %v", tc.err, reason, permanent, tc.permanent)
			}
			if permanent && reason != delivery.ReasonRejected {
				t.Errorf("classify(%v) = %q, want %q", tc.err, reason, delivery.ReasonRejected)
			}
		})
	}
}

func TestSendError(t *testing.T) {
	msg := &message{id: "e7", stream: "outbox.Order"}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"with advice", reply("READONLY You can't write against a read only replica."),
			`add event e7 to stream "outbox.Order": READONLY You can't write against a read only replica.; the server is a read-only replica; point the URL at the primary`},
		{"cluster", reply("MOVED 3999 127.0.0.1:6381"), "which the redis sink does not support"},
		{"without advice", io.EOF, `add event e7 to stream "outbox.Order": EOF`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := sendError(msg, tc.err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("sendError = %q, want it to hold %q", err, tc.want)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("sendError = %v, which does not wrap %v", err, tc.err)
			}
		})
	}
}

func TestExplain(t *testing.T) {
	const url = "redis://u:xxxxx@127.0.0.1:6379/0"
	const tlsURL = "rediss://u:xxxxx@127.0.0.1:6379/0"
	op := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	for _, tc := range []struct {
		name string
		err  error
		want string
		url  string // "" means url
	}{
		{"refused", op(os.NewSyscallError("connect", syscall.ECONNREFUSED)),
			"no Redis server answered at " + url + " (connection refused); check that it is running and reachable, and the URL", ""},
		{"unknown host", op(&net.DNSError{Err: "no such host", Name: "nowhere.invalid", IsNotFound: true}), "cannot be resolved", ""},
		{"unknown authority", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, "is not trusted", ""},
		{"wrong host", x509.HostnameError{Certificate: &x509.Certificate{}, Host: "h"}, "check the server name", ""},
		{"not TLS", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, "does not speak TLS; use redis://", ""},
		{"TLS alert", &net.OpError{Op: "remote error", Err: errors.New("tls: certificate required")}, "give the certificate and key files", ""},
		{"NOAUTH", reply("NOAUTH Authentication required."), "requires authentication", ""},
		{"WRONGPASS", fmt.Errorf("failed to authenticate: %w", reply("WRONGPASS invalid username-password pair")), "refused the credentials", ""},
		{"NOPERM", reply("NOPERM User u has no permissions to run the 'ping' command"), "grant it the commands", ""},
		{"LOADING", reply("LOADING Redis is loading the dataset in memory"), "is loading its data set", ""},
		{"closed", io.EOF, "closed the connection (EOF); if it requires TLS, use rediss://", ""},
		{"closed over TLS", io.EOF, "closed the connection (EOF); if it requires client certificates", tlsURL},
		{"reset", op(os.NewSyscallError("read", syscall.ECONNRESET)), "closed the connection", ""},
		{"timeout", op(os.ErrDeadlineExceeded), "no answer from " + url + " in time", ""},
		{"timeout over TLS", op(os.ErrDeadlineExceeded), "if the server does not use TLS, use redis://", tlsURL},
		{"deadline", context.DeadlineExceeded, "in time", ""},
		{"other reply", reply("READONLY You can't write against a read only replica."), "point the URL at the primary", ""},
		{"other", errors.New("something else"), "did not answer: something else", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := tc.url
			if u == "" {
				u = url
			}
			err := explain(u, tc.err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("explain(%v) = %q, want it to hold %q", tc.err, err, tc.want)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("explain(%v) = %v, which does not wrap it", tc.err, err)
			}
		})
	}
}
