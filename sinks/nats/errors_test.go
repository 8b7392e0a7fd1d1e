package nats

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// apiError returns the error JetStream's acknowledgement carries for code.
func apiError(code jetstream.ErrorCode, status int, description string) error {
	return fmt.Errorf("publish to subject %q: %w", "outbox.order.1", &jetstream.APIError{Code: status, ErrorCode: code, Description: description})
}

func TestClassify(t *testing.T) {
	for _, tt := range []struct {
		name      string
		err       error
		reason    string
		permanent bool
	}{
		{"MaxPayload", fmt.Errorf("publish: %w", natsgo.ErrMaxPayload), delivery.ReasonSize, true},
		{"StreamMaxMsgSize", apiError(jetstream.JSErrCodeStreamMessageExceedsMaximum, 400, "message size exceeds maximum allowed"), delivery.ReasonSize, true},
		{"StreamMaxMsgSizeSentinel", jetstream.ErrStreamMessageExceedsMaximum, delivery.ReasonSize, true},
		{"HeadersOver64K", apiError(10097, 400, "header size exceeds maximum allowed of 64k"), delivery.ReasonSize, true},
		{"BadHeader", natsgo.ErrBadHeaderMsg, delivery.ReasonHeaders, true},
		{"BadSubject", natsgo.ErrBadSubject, delivery.ReasonDestination, true},

		{"NoStream", fmt.Errorf("publish: %w", jetstream.ErrNoStreamResponse), "", false},
		{"AckTimeout", jetstream.ErrAsyncPublishTimeout, "", false},
		{"Disconnected", natsgo.ErrDisconnected, "", false},
		{"NoReconnectBuffer", natsgo.ErrReconnectBufExceeded, "", false},
		{"Reconnecting", natsgo.ErrConnectionReconnecting, "", false},
		{"Closed", natsgo.ErrConnectionClosed, "", false},
		{"TooManyPending", jetstream.ErrTooManyStalledMsgs, "", false},
		{"DiscardNewLimit", apiError(10077, 503, "maximum messages exceeded"), "", false},
		{"InsufficientResources", apiError(10023, 503, "insufficient resources"), "", false},
		{"ClusterUnavailable", apiError(10008, 503, "JetStream system temporarily unavailable"), "", false},
		{"DuplicateInProcess", apiError(10158, 409, "duplicate message id is in process"), "", false},
		{"Sealed", apiError(10109, 400, "invalid operation on sealed stream"), "", false},
		{"StreamOffline", apiError(10118, 500, "stream is offline"), "", false},
		{"InvalidAck", jetstream.ErrInvalidJSAck, "", false},
		{"Context", context.Canceled, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reason, permanent := classify(tt.err)
			if reason != tt.reason || permanent != tt.permanent {
				t.Errorf("classify(%v) = %q, %v; want %q, %v", tt.err, reason, permanent, tt.reason, tt.permanent)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	cn := &conn{url: "nats://relay:xxxxx@db:4222", log: slog.New(slog.DiscardHandler)}
	dial := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	for _, tt := range []struct {
		name string
		last error // nil: no attempt failed yet
		want string
	}{
		{"NoAttemptYet", nil, "no NATS server answered at nats://relay:xxxxx@db:4222 yet; check that it is running and reachable, and the URL"},
		{"Refused", dial(&os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}), "no NATS server answered at nats://relay:xxxxx@db:4222 (connection refused); check that it is running"},
		{"UnknownHost", dial(&net.DNSError{Err: "no such host", Name: "db", IsNotFound: true}), "the host of nats://relay:xxxxx@db:4222 cannot be resolved"},
		{"Timeout", dial(os.ErrDeadlineExceeded), "in time"},
		{"Authorization", fmt.Errorf("connect: %w", natsgo.ErrAuthorization), "refused the credentials"},
		{"AuthExpired", natsgo.ErrAuthExpired, "refused the credentials"},
		{"UnknownAuthority", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, "is not trusted"},
		{"WrongHostname", x509.HostnameError{Certificate: &x509.Certificate{}, Host: "db"}, "is not trusted"},
		{"TLSNotOffered", natsgo.ErrSecureConnWanted, "does not offer it"},
		{"Other", io.ErrUnexpectedEOF, "cannot reach the NATS server at nats://relay:xxxxx@db:4222"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cn.lastErr.Store(nil)
			if tt.last != nil {
				cn.lastErr.Store(&tt.last)
			}
			err := cn.unreachable(context.DeadlineExceeded)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("unreachable = %q, want it to say %q", err, tt.want)
			}
			if tt.last != nil && !errors.Is(err, tt.last) {
				t.Errorf("unreachable = %v, does not wrap %v", err, tt.last)
			}
		})
	}
}
