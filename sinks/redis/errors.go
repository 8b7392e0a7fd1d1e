package redis

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// replyCode returns the kind of the Redis error reply err holds, the first
// word of the reply (WRONGTYPE, LOADING, ERR...), or "" when err holds no
// error reply: a connection error, a timeout, a closed client. The Redis
// protocol documents that first word as the part of an error reply that
// clients match on ("the first word after the -, up to the first space or
// newline, represents the kind of error returned"), and go-redis hands
// replies over as errors implementing goredis.Error, with no code of their
// own: so matching it is matching a contract, not message text.
func replyCode(err error) string {
	var reply goredis.Error
	if !errors.As(err, &reply) {
		return ""
	}
	code, _, _ := strings.Cut(reply.Error(), " ")
	return code
}

// classify is Broker.Classify: whether err, from an XADD, means the entry
// can never be added.
//
// Only WRONGTYPE is permanent: the stream key holds a value of another type
// (a string, a hash), so that every XADD to it fails the same way until
// someone deletes or renames the key, and the event is dead-lettered (or
// the relay halts) rather than holding its aggregate, and every later
// aggregate with events for that key, forever. The key comes from the
// template, so events of other aggregate types keep flowing.
//
// Everything else passes, and delivery sends the entry again after a
// backoff: connection errors, timeouts and a closed connection; LOADING
// (the server is reading its data set at start), BUSY (a script runs too
// long), OOM (maxmemory reached), READONLY (a replica, or a primary that
// became one in a failover), MASTERDOWN, TRYAGAIN, CLUSTERDOWN,
// NOREPLICAS (min-replicas-to-write) and MISCONF (the server cannot save):
// conditions of the server that end; NOAUTH, WRONGPASS and NOPERM (an ACL
// that forbids XADD or the key): a configuration an operator fixes, like
// the Kafka sink's unauthorized topic, and not the event's fault; MOVED and
// ASK: the server is a Redis Cluster node, which the sink does not support
// (Setup says so), and nothing an event did; and any other ERR. A message
// Redis cannot take for its size is refused by Map before it is sent.
func classify(err error) (reason string, permanent bool) {
	if replyCode(err) == "WRONGTYPE" {
		return delivery.ReasonRejected, true
	}
	return "", false
}

// advice returns what to do about the error reply in err, or "" when there
// is nothing more to say than the reply.
func advice(err error) string {
	switch replyCode(err) {
	case "WRONGTYPE":
		return "the key holds a value that is not a stream; delete or rename it, or change the stream template"
	case "MOVED", "ASK":
		return "the server is a Redis Cluster node, which the redis sink does not support; point the URL at a standalone server or a primary"
	case "NOAUTH":
		return "the server requires authentication; give the password (and username) in the URL or the password setting"
	case "WRONGPASS":
		return "the server refused the username or password; check them"
	case "NOPERM":
		return "the user may not run this command or write this key; grant it +xadd on the stream keys (see the package doc)"
	case "READONLY":
		return "the server is a read-only replica; point the URL at the primary"
	case "OOM":
		return "the server reached maxmemory; free memory, raise maxmemory, or trim the streams"
	case "MISCONF":
		return "the server cannot write its data to disk; see its log"
	case "LOADING":
		return "the server is loading its data set into memory; wait for it"
	case "BUSY":
		return "a script has been running too long; wait for it, or end it with SCRIPT KILL"
	case "NOREPLICAS":
		return "fewer replicas than min-replicas-to-write are connected; check them"
	}
	return ""
}

// sendError wraps err, the outcome of msg's XADD, with the event and the
// stream, and with what to do.
func sendError(msg *message, err error) error {
	if a := advice(err); a != "" {
		return fmt.Errorf("add event %s to stream %q: %w; %s", msg.id, msg.stream, err, a)
	}
	return fmt.Errorf("add event %s to stream %q: %w", msg.id, msg.stream, err)
}

// serverError is an error whose message says what to check; Unwrap returns
// the cause.
type serverError struct {
	msg string
	err error
}

func (e *serverError) Error() string { return e.msg }

func (e *serverError) Unwrap() error { return e.err }

// explain turns err, from a command on the server at url (its password
// redacted), into an error saying what to check: the URL, the server, the
// credentials, the certificates.
func explain(url string, err error) error {
	var (
		dns      *net.DNSError
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		record   tls.RecordHeaderError
		op       *net.OpError
		netErr   net.Error
	)
	useTLS := strings.HasPrefix(url, schemeTLS+"://")
	var msg string
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		msg = fmt.Sprintf("no Redis server answered at %s (connection refused); check that it is running and reachable, and the URL", url)
	case errors.As(err, &dns):
		msg = fmt.Sprintf("the host of %s cannot be resolved (%v); check the URL", url, dns)
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &hostname), errors.As(err, &invalid):
		msg = fmt.Sprintf("the certificate of the server at %s is not trusted (%v); give the CA file of the authority that signed it, and check the server name or the URL's host", url, err)
	case errors.As(err, &record):
		msg = fmt.Sprintf("the server at %s does not speak TLS; use redis:// rather than rediss://, or check the URL's port", url)
	case errors.As(err, &op) && op.Op == "remote error":
		// A TLS alert from the server: crypto/tls reports those as
		// *net.OpError with Op "remote error".
		msg = fmt.Sprintf("the server at %s refused the TLS handshake (%v); if it requires client certificates, give the certificate and key files, and check that they are signed by an authority it trusts", url, op.Err)
	case replyCode(err) == "NOAUTH":
		msg = fmt.Sprintf("the Redis server at %s requires authentication (%v); give the password (and username) in the URL or the password setting", url, err)
	case replyCode(err) == "WRONGPASS":
		msg = fmt.Sprintf("the Redis server at %s refused the credentials (%v); check the username and password", url, err)
	case replyCode(err) == "NOPERM":
		msg = fmt.Sprintf("the Redis user at %s may not run a command the sink needs (%v); grant it the commands the package doc lists", url, err)
	case replyCode(err) == "LOADING":
		msg = fmt.Sprintf("the Redis server at %s is loading its data set into memory; wait for it to finish", url)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		if useTLS {
			// With TLS 1.3 a server refuses a client certificate after
			// the client finished its handshake: the client sees the
			// connection closed.
			msg = fmt.Sprintf("the server at %s closed the connection (%v); if it requires client certificates, give the certificate and key files, and check that they are signed by an authority it trusts", url, err)
			break
		}
		msg = fmt.Sprintf("the server at %s closed the connection (%v); if it requires TLS, use rediss://, and check the URL's port", url, err)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		msg = fmt.Sprintf("no answer from %s in time (%v); check the URL's host and port, and that no firewall drops the connection", url, err)
		if useTLS {
			// A server without TLS takes the handshake for the start of
			// a command and waits for its end.
			msg += "; if the server does not use TLS, use redis://"
		}
	default:
		msg = fmt.Sprintf("the Redis server at %s did not answer: %v", url, err)
		if a := advice(err); a != "" {
			msg += "; " + a
		}
	}
	return &serverError{msg: msg, err: err}
}
