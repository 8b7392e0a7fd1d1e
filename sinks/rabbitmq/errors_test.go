package rabbitmq

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

func TestClassify(t *testing.T) {
	msg := &message{exchange: "outbox", key: "order.created"}
	dead := &message{key: "dlq", deadLetter: true}
	for _, tt := range []struct {
		name      string
		err       error
		reason    string
		permanent bool
	}{
		{"unroutable", destinationError(msg, errUnroutable), delivery.ReasonUnroutable, true},
		{"not routed yet", destinationError(msg, errNotRoutedYet), "", false},
		{"dead-letter queue missing", fmt.Errorf("dead letter: %w", errDeadLetterQueueMissing), "", false},
		{"nack", destinationError(msg, errNacked), "", false},
		{"exchange missing", &exchangeError{exchange: "outbox", setup: true, err: &amqp.Error{Code: amqp.NotFound, Server: true}}, "", false},
		{"channel closed", destinationError(msg, &amqp.Error{Code: amqp.PreconditionFailed, Reason: "PRECONDITION_FAILED", Server: true}), "", false},
		{"connection closed", destinationError(dead, amqp.ErrClosed), "", false},
		{"no outcome", destinationError(msg, errNoOutcome), "", false},
		{"dial", explain(amqp.URI{Scheme: "amqp", Host: "h", Port: 5672}, syscall.ECONNREFUSED), "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reason, permanent := classify(tt.err)
			if reason != tt.reason || permanent != tt.permanent {
				t.Errorf("classify(%v) = %q, %v; want %q, %v", tt.err, reason, permanent, tt.reason, tt.permanent)
			}
		})
	}
}

func TestExchangeError(t *testing.T) {
	cause := &amqp.Error{Code: amqp.NotFound, Reason: "NOT_FOUND - no exchange 'outbox' in vhost '/'", Server: true}
	for _, tt := range []struct {
		setup bool
		want  string
	}{
		{true, "run `outbox-relay setup --sink=rabbitmq` to declare it"},
		{false, "setup declares only an exchange whose template has no placeholder"},
	} {
		t.Run(fmt.Sprint("setup=", tt.setup), func(t *testing.T) {
			err := &exchangeError{exchange: "outbox", setup: tt.setup, err: cause}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), `exchange "outbox" does not exist`) {
				t.Errorf("Error() = %q, want %q", err, tt.want)
			}
			if !errors.Is(err, cause) {
				t.Error("the exchange error does not wrap its cause")
			}
		})
	}
}

// TestExplain checks the advice each kind of connection failure gets, on
// errors built as the standard library and amqp091 build them; the
// integration tests (TestPing) get them from real failures.
func TestExplain(t *testing.T) {
	uri := amqp.URI{Scheme: "amqp", Host: "rabbit.example", Port: 5672, Username: "relay", Password: "pw-secret", Vhost: "prod"}
	guest := uri
	guest.Username = "guest"
	op := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	for _, tt := range []struct {
		name string
		uri  amqp.URI
		err  error
		want []string
	}{
		{"refused", uri, op(os.NewSyscallError("connect", syscall.ECONNREFUSED)), []string{
			"no RabbitMQ server answered at amqp://rabbit.example:5672 (connection refused)", "check that it is running and reachable"}},
		{"timeout", uri, fmt.Errorf("connect: %w", context.DeadlineExceeded), []string{"in time", "reachable"}},
		{"socket deadline", uri, op(os.ErrDeadlineExceeded), []string{"in time"}},
		{"unknown host", uri, op(&net.DNSError{Err: "no such host", Name: "rabbit.example", IsNotFound: true}), []string{`host "rabbit.example" is not known`, "check the URL's host"}},
		{"untrusted", uri, x509.UnknownAuthorityError{}, []string{"authority the sink does not trust", "TLS CA file"}},
		{"host name", uri, x509.HostnameError{Certificate: &x509.Certificate{}, Host: "rabbit.example"}, []string{"not for the host", "TLS server name"}},
		{"expired", uri, x509.CertificateInvalidError{Reason: x509.Expired}, []string{"not valid", "renew"}},
		{"TLS alert", uri, &net.OpError{Op: "remote error", Err: errors.New("tls: certificate required")}, []string{"ended the TLS handshake", "client certificate"}},
		{"credentials", uri, amqp.ErrCredentials, []string{`refused the credentials of user "relay"`, "(ACCESS_REFUSED)", "user name and the password"}},
		{"guest", guest, amqp.ErrCredentials, []string{"guest only from its own host"}},
		{"vhost", uri, &amqp.Error{Code: amqp.NotAllowed, Reason: "NOT_ALLOWED - vhost prod not found", Server: true}, []string{
			`refused vhost "prod" to user "relay"`, "rabbitmqctl list_vhosts", "set_permissions"}},
		{"vhost without reply", uri, amqp.ErrVhost, []string{`refused vhost "prod"`}},
		{"closed early", uri, io.EOF, []string{"before speaking AMQP 0-9-1", "5672", "5671"}},
		{"not AMQP", uri, &amqp.Error{Code: amqp.FrameError, Reason: "frame size exceeds negotiated frame_max"}, []string{"before speaking AMQP 0-9-1"}},
		{"mechanism", uri, amqp.ErrSASL, []string{"no login mechanism"}},
		{"other", uri, errors.New("boom"), []string{"RabbitMQ at amqp://rabbit.example:5672: boom"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := explain(tt.uri, tt.err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("explain() = %q, want it to contain %q", err, w)
				}
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("explain() = %v does not wrap %v", err, tt.err)
			}
			if strings.Contains(err.Error(), "pw-secret") {
				t.Errorf("explain() = %q holds the password", err)
			}
		})
	}
}
