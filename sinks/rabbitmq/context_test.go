package rabbitmq

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// proxy forwards TCP connections to a target, and can freeze them: it
// then holds what it reads instead of forwarding it, as a server that hangs
// or a network that drops everything would.
type proxy struct {
	l      net.Listener
	target string
	up     atomic.Int64 // bytes read from clients

	mu     sync.Mutex
	resume chan struct{} // closed by thaw; nil while not frozen
	conns  []net.Conn
	wg     sync.WaitGroup
}

// newProxy starts a proxy to target, closed when t ends.
func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *proxy) accept() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(s, c, &p.up) })
		p.wg.Go(func() { p.pipe(c, s, nil) })
	}
}

// pipe copies src to dst, holding what it read while frozen, and closes
// both at the end.
func (p *proxy) pipe(dst, src net.Conn, count *atomic.Int64) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if count != nil {
				count.Add(int64(n))
			}
			p.mu.Lock()
			resume := p.resume
			p.mu.Unlock()
			if resume != nil {
				<-resume
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resume = make(chan struct{})
}

func (p *proxy) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resume != nil {
		close(p.resume)
		p.resume = nil
	}
}

func (p *proxy) close() {
	p.l.Close()
	p.thaw()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestContext checks that Send and Ping return when their context ends
// while the server does not answer, and that the next Send connects again.
func TestContext(t *testing.T) {
	node := serverFor(t)
	p := newProxy(t, strings.TrimSuffix(strings.TrimPrefix(node.URL, "amqp://guest:guest@"), "/"))
	cfg := testConfig(t)
	cfg.URL = "amqp://guest:guest@" + p.l.Addr().String() + "/"
	logger, _ := newLogs(t)
	b, err := newBroker(cfg.withDefaults(), logger)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.setup(ctx); err != nil {
		t.Fatal(err)
	}
	queue := unique("context")
	node.Bind(t, cfg.Exchange, queue)
	send := func(ctx context.Context, n int) []error {
		var msgs []*message
		for _, ev := range events(unique("ctx"), n, n) {
			m, _, err := b.Map(ev)
			if err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, m)
		}
		errs := make([]error, n)
		b.Send(ctx, msgs, errs)
		return errs
	}
	if errs := send(ctx, 3); errors.Join(errs...) != nil {
		t.Fatalf("Send before the freeze: %v", errs)
	}

	p.freeze()
	up := p.up.Load()
	sctx, scancel := context.WithCancel(context.Background())
	returned := make(chan []error)
	go func() { returned <- send(sctx, 5) }()
	waitFor(t, "the messages written to the frozen connection", func() bool { return p.up.Load() > up })
	scancel()
	select {
	case errs := <-returned:
		for i, err := range errs {
			if err == nil || !(errors.Is(err, errNoOutcome) || errors.Is(err, amqp.ErrClosed)) {
				t.Errorf("message %d after the context ended: %v, want no outcome", i, err)
			}
		}
	case <-time.After(waitTimeout):
		t.Fatalf("Send still blocked %s after its context ended", waitTimeout)
	}

	pctx, pcancel := context.WithTimeout(context.Background(), time.Second)
	err = b.Ping(pctx)
	pcancel()
	if err == nil || !strings.Contains(err.Error(), "in time") {
		t.Errorf("Ping of a server that does not answer = %v, want no answer in time", err)
	}

	// The URL's connection_timeout bounds a handshake the server does not
	// answer, whatever the context.
	cfg.URL += "?connection_timeout=300"
	quick, err := newBroker(cfg.withDefaults(), logger)
	if err != nil {
		t.Fatal(err)
	}
	defer quick.Close()
	if err := quick.Ping(ctx); err == nil || !strings.Contains(err.Error(), "no handshake within 300ms") || !strings.Contains(err.Error(), "in time") {
		t.Errorf("Ping of a server that does not answer, with connection_timeout=300 = %v, want no handshake within 300ms", err)
	}

	p.thaw()
	if errs := send(ctx, 3); errors.Join(errs...) != nil {
		t.Fatalf("Send after the thaw: %v", errs)
	}
	if n := len(node.Read(t, queue)); n < 6 || n > 11 {
		// Any of the 5 messages without an outcome may have been stored
		// (the proxy forwards what it held); the others must be.
		t.Errorf("queue holds %d messages, want 6 to 11", n)
	}
}
