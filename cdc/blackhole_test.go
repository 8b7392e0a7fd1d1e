package cdc_test

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/relay"
)

// holeProxy forwards TCP connections to a server. blackhole makes every
// connection open at that moment go silent, as behind a firewall that drops
// packets: bytes are read and dropped both ways and the sockets stay open.
// Connections accepted later are forwarded.
type holeProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns []*atomic.Bool // one per connection: true once black-holed
	socks []net.Conn
	wg    sync.WaitGroup
}

func newHoleProxy(t *testing.T, target string) *holeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holeProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *holeProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		dead := new(atomic.Bool)
		p.mu.Lock()
		p.conns = append(p.conns, dead)
		p.socks = append(p.socks, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(s, c, dead)
		go p.pipe(c, s, dead)
	}
}

// pipe copies from src to dst until either fails, dropping the bytes once
// dead is set.
func (p *holeProxy) pipe(dst, src net.Conn, dead *atomic.Bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !dead.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF || !dead.Load() {
				dst.Close()
			}
			return
		}
	}
}

// blackhole silences every connection open now.
func (p *holeProxy) blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range p.conns {
		d.Store(true)
	}
}

func (p *holeProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, s := range p.socks {
		s.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestStreamReconnectsAfterBlackhole silences the replication connection
// without closing it: the stream notices within wal_sender_timeout, is not
// streaming meanwhile, reconnects, and relays the rows committed while it
// was cut off.
func TestStreamReconnectsAfterBlackhole(t *testing.T) {
	direct := pgtest.NewDatabase(t)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newHoleProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	// pgx does not read '+' as a space: escape by hand.
	u.RawQuery += "&options=-c%20wal_sender_timeout%3D5s"

	cfg := cdc.Config{DSN: u.String(), Slot: "blackhole_test", StatusInterval: 100 * time.Millisecond}
	setupDB(t, cdc.Config{DSN: direct, Slot: cfg.Slot})
	sink := newMemSink()
	core, err := relay.New(relay.Config{}, sink, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := cdc.New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx, core) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v after cancel, want nil", err)
		}
	}()

	insertBatch(t, direct, 0, 5)
	sink.waitFor(t, 5)
	time.Sleep(500 * time.Millisecond) // the first rows are confirmed

	cut := time.Now()
	proxy.blackhole()
	insertBatch(t, direct, 5, 5)
	var notStreaming, streamingAgain time.Duration
	for deadline := cut.Add(40 * time.Second); len(sink.snapshot()) < 10; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("sink holds %d events 40s after the black hole, want 10; stream %s", len(sink.snapshot()), st.State())
		}
		switch s := st.State(); {
		case s != cdc.StateStreaming && notStreaming == 0:
			notStreaming = time.Since(cut)
		case s == cdc.StateStreaming && notStreaming != 0 && streamingAgain == 0:
			streamingAgain = time.Since(cut)
		}
	}
	delivered := time.Since(cut)
	if streamingAgain == 0 {
		streamingAgain = delivered
	}
	t.Logf("wal_sender_timeout=5s: silence detected (not streaming) after %s, streaming again after %s, rows delivered after %s",
		notStreaming.Round(10*time.Millisecond), streamingAgain.Round(10*time.Millisecond), delivered.Round(10*time.Millisecond))
	if notStreaming == 0 {
		t.Error("the stream reported streaming throughout the black hole, want another state while it was cut off")
	}
	checkExactlyOnce(t, sink.snapshot(), 10)
}
