package rabbitmq

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// Why a message was not acknowledged. Only errUnroutable is the event's
// fault; the others are outages, and the message is sent again.
var (
	// errUnroutable: the server returned the message (basic.return,
	// mandatory): no queue bound to its exchange matches its routing key.
	errUnroutable = errors.New("returned unroutable (312 NO_ROUTE): no queue bound to the exchange matches the routing key; bind the consumers' queues before events flow, or let such events go to the dead-letter queue")
	// errNotRoutedYet: the server returned the message unroutable, but
	// for less than Config.UnroutableGrace so far.
	errNotRoutedYet = errors.New("returned unroutable (312 NO_ROUTE), sent again until the unroutable grace has passed: a consumer may be about to bind its queue; if none is, bind one")
	// errNacked: the server refused to take the message (basic.nack), as a
	// queue at its length limit with overflow=reject-publish does.
	errNacked = errors.New("the server refused to store it (basic.nack); check the queues it routes to (length limits with overflow=reject-publish, disk alarms)")
	// errDeadLetterQueueMissing: a dead letter came back unroutable.
	errDeadLetterQueueMissing = errors.New("the dead-letter queue does not exist (the dead letter came back unroutable); run `outbox-relay setup --sink=rabbitmq` to declare it")
	// errNoOutcome: Send returned, as its context ended, before the
	// server's answer came.
	errNoOutcome = errors.New("no answer from the server before the sink closed")
)

// exchangeError reports an exchange the server does not have.
type exchangeError struct {
	exchange string
	setup    bool // whether Setup declares it
	err      error
}

func (e *exchangeError) Error() string {
	fix := "run `outbox-relay setup --sink=rabbitmq` to declare it"
	if !e.setup {
		fix = "declare it (setup declares only an exchange whose template has no placeholder)"
	}
	return fmt.Sprintf("exchange %q does not exist (%v); events to it are held until it does: %s", e.exchange, e.err, fix)
}

func (e *exchangeError) Unwrap() error { return e.err }

// classify is Broker.Classify: an unroutable event is permanent
// (ReasonUnroutable); every other error is an outage.
func classify(err error) (reason string, permanent bool) {
	if errors.Is(err, errUnroutable) {
		return delivery.ReasonUnroutable, true
	}
	return "", false
}

// serverError returns err's AMQP error from the server, or nil.
func serverError(err error) *amqp.Error {
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Server {
		return ae
	}
	return nil
}

// explain returns err, from connecting to the server of uri, with what to
// check: the URL, the server, the credentials, the vhost, the certificate.
// It never holds the password.
func explain(uri amqp.URI, err error) error {
	addr := address(uri)
	var (
		dnsErr     *net.DNSError
		unknownCA  x509.UnknownAuthorityError
		hostErr    x509.HostnameError
		invalidErr x509.CertificateInvalidError
		recordErr  tls.RecordHeaderError
		opErr      *net.OpError
		frameErr   *amqp.Error
		ae         = serverError(err)
	)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("no answer from RabbitMQ at %s in time (%w); check that the server is running and reachable, and the URL's host and port", addr, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("no RabbitMQ server answered at %s (connection refused); check that it is running and reachable, and the URL's host and port: %w", addr, err)
	case errors.As(err, &dnsErr):
		return fmt.Errorf("no RabbitMQ server at %s: host %q is not known (%w); check the URL's host", addr, uri.Host, err)
	case errors.As(err, &unknownCA):
		return fmt.Errorf("RabbitMQ at %s presented a certificate signed by an authority the sink does not trust (%w); give the CA that signed it as the TLS CA file", addr, err)
	case errors.As(err, &hostErr):
		return fmt.Errorf("RabbitMQ at %s presented a certificate that is not for the host the sink checks (%w); use the host the certificate names in the URL, or set the TLS server name", addr, err)
	case errors.As(err, &invalidErr):
		return fmt.Errorf("RabbitMQ at %s presented a certificate that is not valid (%w); renew it, or check the clocks", addr, err)
	case errors.As(err, &recordErr):
		return fmt.Errorf("the server at %s did not answer in TLS (%w); it may listen in plain AMQP there: use amqp://, or the server's TLS port (5671 by default)", addr, err)
	case errors.As(err, &opErr) && opErr.Op == "remote error": // a TLS alert from the server
		return fmt.Errorf("RabbitMQ at %s ended the TLS handshake (%w); check the client certificate and key the server may require, and the TLS versions it accepts", addr, err)
	case errors.Is(err, amqp.ErrCredentials):
		hint := ""
		if uri.Username == "guest" {
			hint = " (RabbitMQ accepts guest only from its own host unless loopback_users allows it)"
		}
		return fmt.Errorf("RabbitMQ at %s refused the credentials of user %q%s (ACCESS_REFUSED); check the user name and the password: %w", addr, uri.Username, hint, err)
	case errors.Is(err, amqp.ErrVhost), ae != nil && ae.Code == amqp.NotAllowed:
		return fmt.Errorf("RabbitMQ at %s refused vhost %q to user %q; check that the vhost exists (rabbitmqctl list_vhosts) and that the user may use it (rabbitmqctl set_permissions -p VHOST USER '.*' '.*' '.*'): %w", addr, uri.Vhost, uri.Username, err)
	case ae != nil && ae.Code == amqp.AccessRefused:
		return fmt.Errorf("RabbitMQ at %s refused user %q; check the user's rights: %w", addr, uri.Username, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &frameErr) && (frameErr.Code == amqp.FrameError || frameErr.Code == amqp.SyntaxError):
		return fmt.Errorf("the server at %s closed the connection before speaking AMQP 0-9-1 (%w); check the port and the scheme: amqp:// for plain AMQP (5672 by default), amqps:// for TLS (5671)", addr, err)
	case errors.Is(err, amqp.ErrSASL):
		return fmt.Errorf("RabbitMQ at %s offers no login mechanism the sink speaks (PLAIN, AMQPLAIN); enable PLAIN on the server: %w", addr, err)
	}
	return fmt.Errorf("RabbitMQ at %s: %w; check that the server is running and reachable, and the URL", addr, err)
}
