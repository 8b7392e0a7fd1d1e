package rabbitmq

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// defaultConnectionTimeout bounds a dial and the AMQP handshake when the
// URL sets no connection_timeout, as amqp091's own default does.
const defaultConnectionTimeout = 30 * time.Second

// closeTimeout bounds the close handshake of a connection the Sink drops.
const closeTimeout = 5 * time.Second

// dialer dials the server of one Config. It is safe for concurrent use.
type dialer struct {
	url  string
	uri  amqp.URI
	tls  *tls.Config // nil for amqp://
	sasl []amqp.Authentication
}

// newDialer returns the dialer of cfg, which must be valid.
func newDialer(cfg Config) (*dialer, error) {
	uri, err := cfg.uri()
	if err != nil {
		return nil, err
	}
	d := &dialer{url: cfg.URL, uri: uri}
	if uri.Scheme == "amqps" {
		if d.tls, err = cfg.TLS.Config(""); err != nil {
			return nil, fmt.Errorf("rabbitmq: %w", err)
		}
	}
	// The credentials are given here, not left to the URL, so that
	// Username and Password replace the URL's.
	for _, m := range uri.AuthMechanism {
		switch strings.ToUpper(m) {
		case "PLAIN":
			d.sasl = append(d.sasl, uri.PlainAuth())
		case "AMQPLAIN":
			d.sasl = append(d.sasl, uri.AMQPlainAuth())
		case "EXTERNAL":
			d.sasl = append(d.sasl, &amqp.ExternalAuth{})
		default:
			return nil, fmt.Errorf("rabbitmq: URL asks for auth_mechanism %q; use plain, amqplain or external", m)
		}
	}
	if len(d.sasl) == 0 {
		d.sasl = []amqp.Authentication{uri.PlainAuth()}
	}
	return d, nil
}

// dial connects to the server within ctx and returns the session, or an
// error saying what to check (see explain). The session logs to log.
func (d *dialer) dial(ctx context.Context, log *slog.Logger) (*session, error) {
	timeout := defaultConnectionTimeout
	if d.uri.ConnectionTimeout > 0 {
		timeout = time.Duration(d.uri.ConnectionTimeout) * time.Millisecond
	}
	var (
		mu      sync.Mutex
		raw     net.Conn
		aborted bool
		// The TLS and AMQP handshakes must end by then; amqp091 clears
		// the socket's deadline once the connection is open. ctx's end
		// closes the socket instead, so that the two tell apart.
		deadline = time.Now().Add(timeout)
	)
	cfg := amqp.Config{
		SASL:       d.sasl,
		Properties: amqp.NewConnectionProperties(),
		Dial: func(network, addr string) (net.Conn, error) {
			nd := net.Dialer{Timeout: timeout}
			c, err := nd.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if err := c.SetDeadline(deadline); err != nil {
				c.Close()
				return nil, err
			}
			mu.Lock()
			defer mu.Unlock()
			if aborted {
				c.Close()
				return nil, ctx.Err()
			}
			raw = c
			return c, nil
		},
	}
	if d.tls != nil {
		cfg.TLSClientConfig = d.tls.Clone()
	}
	cfg.Properties.SetClientConnectionName(AppID)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		aborted = true
		if raw != nil {
			raw.Close()
		}
	})
	conn, err := amqp.DialConfig(d.url, cfg)
	if !stop() {
		// ctx ended: raw is closed, or was never dialed.
		if err == nil {
			conn.Close()
		}
		return nil, explain(d.uri, fmt.Errorf("connect: %w", ctx.Err()))
	}
	if err != nil && !time.Now().Before(deadline) {
		// amqp091 turns the socket's timeout into a frame error.
		err = fmt.Errorf("%w: no handshake within %s (%v)", os.ErrDeadlineExceeded, timeout, err)
	}
	if err != nil {
		return nil, explain(d.uri, err)
	}
	s := &session{
		conn:      conn,
		raw:       raw,
		closed:    conn.NotifyClose(make(chan *amqp.Error, 1)),
		exchanges: make(map[string]bool),
	}
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	s.watch.Go(func() { watchBlocked(blocked, log) })
	return s, nil
}

// watchBlocked logs when the server blocks the connection's publishers (a
// memory or disk alarm: publishes then wait, and events are held) and when
// it lets them go on, until the connection closes.
func watchBlocked(blocked <-chan amqp.Blocking, log *slog.Logger) {
	for b := range blocked {
		if b.Active {
			log.Warn("RabbitMQ blocks publishing until its resource alarm clears; events are held", "reason", b.Reason)
		} else {
			log.Info("RabbitMQ lets publishing go on")
		}
	}
}

// session is one connection to the server and the channels open on it. Its
// methods are safe for concurrent use.
type session struct {
	conn    *amqp.Connection
	raw     net.Conn         // the socket under conn, closed by abort
	closed  chan *amqp.Error // conn's close notification
	aborted atomic.Bool      // abort was called; conn may not know yet
	watch   sync.WaitGroup   // watchBlocked, which ends when conn closes

	mu        sync.Mutex
	idle      []*channel      // channels no Send uses, in confirm mode
	exchanges map[string]bool // exchanges known to exist
}

// alive reports whether the connection is still open and was not
// aborted.
func (s *session) alive() bool { return !s.aborted.Load() && !s.conn.IsClosed() }

// closeErr returns why the server closed the connection, if it said.
func (s *session) closeErr() error {
	select {
	case err, ok := <-s.closed:
		if ok && err != nil {
			return err
		}
	default:
	}
	return amqp.ErrClosed
}

// abort closes the socket at once, so that every call blocked on the
// connection (a publish held by a resource alarm, an RPC the server does
// not answer) returns, and every pending confirmation fails.
func (s *session) abort() {
	s.aborted.Store(true)
	s.raw.Close()
}

// close closes the connection, waiting at most closeTimeout for the server.
func (s *session) close() {
	_ = s.conn.CloseDeadline(time.Now().Add(closeTimeout)) // a closed connection is what we want
	s.watch.Wait()
}

// guard aborts s when ctx ends before the returned stop is called.
func (s *session) guard(ctx context.Context) (stop func() bool) {
	return context.AfterFunc(ctx, s.abort)
}

// channel returns a channel in confirm mode for one Send's exclusive use,
// an idle one or a new one whose returns can hold room messages. Give it
// back with release. The caller guards ctx.
func (s *session) channel(room int) (*channel, error) {
	s.mu.Lock()
	for len(s.idle) > 0 {
		c := s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
		if !c.ch.IsClosed() && cap(c.returns) >= room {
			s.mu.Unlock()
			return c, nil
		}
	}
	s.mu.Unlock()
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		ch.Close()
		return nil, fmt.Errorf("put channel in confirm mode: %w", err)
	}
	return &channel{
		ch:       ch,
		closed:   ch.NotifyClose(make(chan *amqp.Error, 1)),
		returns:  ch.NotifyReturn(make(chan amqp.Return, room)),
		returned: make(map[returnKey]int),
	}, nil
}

// release makes c available to the next Send, unless it is closed or holds
// confirmations still due.
func (s *session) release(c *channel) {
	if c.ch.IsClosed() {
		return
	}
	c.drain()
	clear(c.returned)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idle = append(s.idle, c)
}

// known reports whether exchange is known to exist.
func (s *session) known(exchange string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exchanges[exchange]
}

// remember records that exchange exists (or forgets it).
func (s *session) remember(exchange string, exists bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if exists {
		if len(s.exchanges) < maxKnownExchanges {
			s.exchanges[exchange] = true
		}
		return
	}
	delete(s.exchanges, exchange)
}

// forget forgets every exchange, after a channel error that may be an
// exchange deleted behind the Sink's back.
func (s *session) forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.exchanges)
}

// maxKnownExchanges bounds session.exchanges; exchanges past it are checked
// again in each Send, which is slower but still correct.
const maxKnownExchanges = 4096

// channel is an AMQP channel in confirm mode, used by one Send at a time,
// so that the returns and confirmations on it are all that Send's.
type channel struct {
	ch       *amqp.Channel
	closed   chan *amqp.Error
	returns  chan amqp.Return
	returned map[returnKey]int // returns drained, not yet matched
	err      *amqp.Error       // why the server closed ch, once read
}

// returnKey identifies a returned message among one Send's messages, whose
// event IDs differ.
type returnKey struct{ exchange, key, id string }

// drain moves the returns that arrived into c.returned. RabbitMQ sends a
// message's basic.return before its basic.ack, and amqp091 hands the return
// to c.returns before it completes the confirmation, so once a message's
// confirmation is done, drain sees its return.
func (c *channel) drain() {
	for {
		select {
		case r, ok := <-c.returns:
			if !ok {
				return
			}
			c.returned[returnKey{r.Exchange, r.RoutingKey, r.MessageId}]++
		default:
			return
		}
	}
}

// wasReturned reports whether m came back with basic.return, and forgets
// that return.
func (c *channel) wasReturned(m *message) bool {
	k := returnKey{m.exchange, m.key, m.pub.MessageId}
	n := c.returned[k]
	switch {
	case n == 0:
		return false
	case n == 1:
		delete(c.returned, k)
	default:
		c.returned[k] = n - 1
	}
	return true
}

// closeErr returns why the server closed c, if it said.
func (c *channel) closeErr() error {
	if c.err == nil {
		select {
		case err, ok := <-c.closed:
			if ok && err != nil {
				c.err = err
			}
		default:
		}
	}
	if c.err != nil {
		return c.err
	}
	return amqp.ErrClosed
}
