package e2e

import (
	"net"
	"strconv"
	"sync"

	"github.com/outbox-relay/outbox-relay/internal/freeport"
)

// cutMode is how a severable listener treats connections during a cut.
type cutMode int

const (
	// refuse closes the listening socket: connection attempts are refused
	// until the cut ends.
	refuse cutMode = iota + 1
	// blackhole accepts connections at the TCP level and never serves
	// them, as a firewall that drops packets would leave a client
	// waiting; they are closed when the cut ends.
	blackhole
)

// severable is a listener whose connections a test can cut. Give it to
// kfake through kfake.ListenFn (see listenSeverable): the broker then
// advertises the listener's own address, so clients keep coming through
// it after bootstrap and no proxy is needed.
type severable struct {
	addr net.Addr

	mu     sync.Mutex
	ln     net.Listener // nil while a refuse cut is on
	mode   cutMode      // zero when no cut is on
	conns  map[*severedConn]struct{}
	held   []net.Conn    // accepted during a blackhole cut
	wake   chan struct{} // closed and replaced when ln or closed change
	closed bool
	// Counts for the test's report.
	severed, blackholed int
}

// listenSeverable returns a kfake.ListenFn that records the severable
// listener it makes in *s. It listens on a port of freeport for the
// kernel's choice (port 0): heal listens on the port again after a cut,
// and a port of the ephemeral range may meanwhile be any connection's.
func listenSeverable(s **severable) func(network, address string) (net.Listener, error) {
	return func(network, address string) (net.Listener, error) {
		if host, port, err := net.SplitHostPort(address); err == nil && port == "0" {
			p, err := freeport.Port()
			if err != nil {
				return nil, err
			}
			address = net.JoinHostPort(host, strconv.Itoa(p))
		}
		ln, err := net.Listen(network, address)
		if err != nil {
			return nil, err
		}
		*s = &severable{addr: ln.Addr(), ln: ln, conns: make(map[*severedConn]struct{}), wake: make(chan struct{})}
		return *s, nil
	}
}

// Accept returns the next connection to serve. During a cut it serves
// none: it waits for the listener to come back (refuse), or takes
// connections and holds them unserved (blackhole).
func (s *severable) Accept() (net.Conn, error) {
	for {
		s.mu.Lock()
		ln, wake, closed := s.ln, s.wake, s.closed
		s.mu.Unlock()
		if closed {
			return nil, net.ErrClosed
		}
		if ln == nil {
			<-wake
			continue
		}
		c, err := ln.Accept()
		s.mu.Lock()
		if err != nil {
			replaced := s.ln != ln && !s.closed
			s.mu.Unlock()
			if replaced {
				continue // a cut closed ln
			}
			return nil, err
		}
		switch {
		case s.closed:
			s.mu.Unlock()
			c.Close()
			return nil, net.ErrClosed
		case s.mode == blackhole:
			s.held = append(s.held, c)
			s.blackholed++
			s.mu.Unlock()
			continue
		}
		sc := &severedConn{Conn: c, s: s}
		s.conns[sc] = struct{}{}
		s.mu.Unlock()
		return sc, nil
	}
}

// cut closes every connection being served and starts a cut in mode.
func (s *severable) cut(mode cutMode) error {
	s.mu.Lock()
	s.mode = mode
	conns := s.conns
	s.conns = make(map[*severedConn]struct{})
	s.severed += len(conns)
	var ln net.Listener
	if mode == refuse {
		ln, s.ln = s.ln, nil
		s.signalLocked()
	}
	s.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
	if ln != nil {
		return ln.Close()
	}
	return nil
}

// heal ends the cut: the address accepts connections and serves them
// again, and connections held by a blackhole cut are closed.
func (s *severable) heal() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		ln, err := net.Listen(s.addr.Network(), s.addr.String())
		if err != nil {
			return err
		}
		s.ln = ln
		s.signalLocked()
	}
	for _, c := range s.held {
		c.Close()
	}
	s.held, s.mode = nil, 0
	return nil
}

// counts returns how many served connections cuts closed and how many
// connections blackhole cuts held.
func (s *severable) counts() (severed, blackholed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.severed, s.blackholed
}

func (s *severable) signalLocked() {
	close(s.wake)
	s.wake = make(chan struct{})
}

// Close closes the listener and every connection it accepted.
func (s *severable) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ln := s.ln
	s.ln = nil
	conns, held := s.conns, s.held
	s.conns, s.held = nil, nil
	s.signalLocked()
	s.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
	for _, c := range held {
		c.Close()
	}
	if ln != nil {
		return ln.Close()
	}
	return nil
}

// Addr returns the address the listener had when it was made, which it
// keeps across cuts.
func (s *severable) Addr() net.Addr { return s.addr }

// severedConn is a served connection that a cut may close.
type severedConn struct {
	net.Conn
	s *severable
}

func (c *severedConn) Close() error {
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	return c.Conn.Close()
}
