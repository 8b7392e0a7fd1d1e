package nats

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// firstReconnectWait is the pause after the first round of failed attempts
// to reach the servers; it doubles each round up to Config.ReconnectWait.
const firstReconnectWait = 100 * time.Millisecond

// pingInterval and maxPingsOut bound how long a connection whose server
// vanished without closing it (a host crash, a network partition) goes
// unnoticed: about a minute, instead of the client's default four.
const (
	pingInterval = 20 * time.Second
	maxPingsOut  = 3
)

// conn is the Sink's connection: the client's, plus what Ping reports of
// it.
type conn struct {
	nc  *natsgo.Conn
	url string // the server list, redacted
	log *slog.Logger
	// lastErr is why the last attempt to reach a server failed; nil
	// once connected.
	lastErr atomic.Pointer[error]
}

// dial returns a connection to the servers of c, which must be valid and
// have its defaults. It does not wait for a server: it makes one attempt,
// for at most the client's dial timeout, and when that fails keeps trying
// in the background without end, with a backoff, so that the Sink starts
// while the servers are down.
func dial(c Config, log *slog.Logger) (*conn, error) {
	tc, err := c.TLS.clientConfig(c.URL)
	if err != nil {
		return nil, err
	}
	cn := &conn{url: redactURL(c.URL), log: log}
	opts := []natsgo.Option{
		natsgo.Name(c.Name),
		// Connect while the servers are down, and never give up: delivery
		// holds the events meanwhile.
		natsgo.RetryOnFailedConnect(true),
		natsgo.MaxReconnects(-1),
		natsgo.IgnoreAuthErrorAbort(),
		natsgo.CustomReconnectDelay(reconnectDelay(c.ReconnectWait)),
		// No reconnect buffer: a publish while disconnected fails at
		// once (ErrReconnectBufExceeded) and delivery sends it again,
		// instead of the client sending a backlog after reconnecting
		// behind messages delivery sent since.
		natsgo.ReconnectBufSize(-1),
		natsgo.PingInterval(pingInterval),
		natsgo.MaxPingsOutstanding(maxPingsOut),
		natsgo.NoCallbacksAfterClientClose(),
		natsgo.ConnectHandler(cn.connected),
		natsgo.ReconnectHandler(cn.connected),
		natsgo.DisconnectErrHandler(cn.lost),
		natsgo.ReconnectErrHandler(cn.failed),
		natsgo.ErrorHandler(cn.asyncError),
	}
	if tc != nil {
		opts = append(opts, natsgo.Secure(tc))
	}
	opts = append(opts, c.Auth.options()...)
	nc, err := natsgo.Connect(c.URL, opts...)
	if err != nil {
		// With RetryOnFailedConnect only a bad option fails here.
		return nil, fmt.Errorf("nats: connect to %s: %w", cn.url, err)
	}
	cn.nc = nc
	return cn, nil
}

// reconnectDelay returns the pause after the n-th round of failed attempts
// to reach every server: firstReconnectWait doubled each round up to
// longest, plus up to a quarter more, so that relays do not reconnect in
// step.
func reconnectDelay(longest time.Duration) natsgo.ReconnectDelayHandler {
	return func(n int) time.Duration {
		d := longest
		if n < 16 {
			d = min(firstReconnectWait<<max(n-1, 0), longest)
		}
		return d + rand.N(d/4+1)
	}
}

// connected records that the client reached a server.
func (c *conn) connected(nc *natsgo.Conn) {
	c.lastErr.Store(nil)
	c.log.Info("connected to NATS", "url", nc.ConnectedUrlRedacted(), "server", nc.ConnectedServerName(), "version", nc.ConnectedServerVersion())
}

// lost records that the client lost its server.
func (c *conn) lost(_ *natsgo.Conn, err error) {
	if err != nil {
		c.lastErr.Store(&err)
	}
	c.log.Warn("disconnected from NATS; reconnecting, and holding events until then", "url", c.url, "err", err)
}

// failed records why an attempt to reach a server failed.
func (c *conn) failed(_ *natsgo.Conn, err error) {
	c.lastErr.Store(&err)
	c.log.Debug("attempt to reach NATS failed", "url", c.url, "err", err)
}

// asyncError logs what the server reported outside any request: a
// permission the user lacks, above all, which leaves the publishes it
// refused without acknowledgement, so they are sent again until it is
// granted.
func (c *conn) asyncError(_ *natsgo.Conn, _ *natsgo.Subscription, err error) {
	if errors.Is(err, natsgo.ErrPermissionViolation) {
		c.log.Error("NATS refused an operation; grant the user permission to publish to the subjects of the template, and to use the JetStream API", "url", c.url, "err", err)
		return
	}
	c.log.Warn("NATS reported an error", "url", c.url, "err", err)
}

// wait blocks until the client is connected, or ctx ends; then it returns
// an error saying why no server answered and what to check.
func (c *conn) wait(ctx context.Context) error {
	ch := c.nc.StatusChanged(natsgo.CONNECTED, natsgo.CLOSED)
	defer c.nc.RemoveStatusListener(ch)
	for {
		switch {
		case c.nc.IsConnected():
			return nil
		case c.nc.IsClosed():
			return fmt.Errorf("the connection to the NATS server at %s is closed: %w", c.url, natsgo.ErrConnectionClosed)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return c.unreachable(ctx.Err())
		}
	}
}

// unreachable returns the error of a wait for a server that ended with
// cause: why the last attempt failed, and what to check.
func (c *conn) unreachable(cause error) error {
	p := c.lastErr.Load()
	if p == nil {
		return fmt.Errorf("no NATS server answered at %s yet; check that it is running and reachable, and the URL: %w", c.url, cause)
	}
	err := *p
	var (
		dnsErr  *net.DNSError
		certErr *tls.CertificateVerificationError
		authErr x509.UnknownAuthorityError
		hostErr x509.HostnameError
		invErr  x509.CertificateInvalidError
		netErr  net.Error
	)
	switch {
	case errors.Is(err, natsgo.ErrAuthorization), errors.Is(err, natsgo.ErrAuthExpired),
		errors.Is(err, natsgo.ErrAuthRevoked), errors.Is(err, natsgo.ErrAccountAuthExpired):
		return fmt.Errorf("the NATS server at %s refused the credentials (%w); check the username and password, token or credentials, and that the user exists on the server", c.url, err)
	case errors.As(err, &certErr), errors.As(err, &authErr), errors.As(err, &hostErr), errors.As(err, &invErr):
		return fmt.Errorf("the certificate of the NATS server at %s is not trusted (%w); give the CA file that signed it, and the server name it holds if that is not the URL's host", c.url, err)
	case errors.Is(err, natsgo.ErrSecureConnWanted):
		return fmt.Errorf("TLS is enabled but the NATS server at %s does not offer it (%w); disable TLS, or configure it on the server", c.url, err)
	case errors.As(err, &dnsErr):
		return fmt.Errorf("the host of %s cannot be resolved (%w); check the URL", c.url, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("no NATS server answered at %s (connection refused); check that it is running and reachable, and the URL: %w", c.url, err)
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Errorf("no NATS server answered at %s in time (%w); check the URL, that the server is running, and any firewall between", c.url, err)
	}
	return fmt.Errorf("cannot reach the NATS server at %s (%w); check that it is running and reachable, the URL, the credentials and the TLS settings", c.url, err)
}

// disconnected returns an error wrapping natsgo.ErrDisconnected while the
// client has no server, with why the last attempt to reach one failed;
// nil while it has one.
func (c *conn) disconnected() error {
	if c.nc.IsConnected() {
		return nil
	}
	if p := c.lastErr.Load(); p != nil {
		return fmt.Errorf("not connected to the NATS server at %s (%w; last attempt: %w)", c.url, natsgo.ErrDisconnected, *p)
	}
	return fmt.Errorf("not connected to the NATS server at %s: %w", c.url, natsgo.ErrDisconnected)
}

// close closes the connection.
func (c *conn) close() { c.nc.Close() }
