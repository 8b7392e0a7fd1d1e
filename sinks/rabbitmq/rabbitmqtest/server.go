package rabbitmqtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/outbox-relay/outbox-relay/internal/freeport"
)

// EnvBinDir names the environment variable that points at the directory
// holding rabbitmq-server. It wins over DefaultBinDir.
const EnvBinDir = "OUTBOX_RELAY_RABBITMQ_BINDIR"

// DefaultBinDir holds the scripts of Debian's rabbitmq-server package. They
// are run directly, not through the wrapper in /usr/sbin, which switches to
// the rabbitmq user.
const DefaultBinDir = "/usr/lib/rabbitmq/bin"

// Timeouts of the node's life.
const (
	// StartTimeout bounds a start, until the node accepts AMQP
	// connections.
	StartTimeout = 2 * time.Minute
	// StopTimeout bounds a clean stop; the node is then killed.
	StopTimeout = time.Minute
)

// Options configures New and StartWith. The zero value is what Start uses:
// no plugin, no TLS.
type Options struct {
	// Plugins are enabled at start, such as
	// rabbitmq_consistent_hash_exchange. Each adds to the start time.
	Plugins []string
	// TLS adds a TLS listener, with a certificate for 127.0.0.1 and
	// localhost signed by a CA of the node's own: Server.TLSURL and
	// Server.CAFile.
	TLS bool
}

// Server is a RabbitMQ node for tests. Its methods are safe for concurrent
// use, but Stop, Start and Kill make other calls see the node go away.
type Server struct {
	// URL is the node's AMQP URI, with the guest user, which the node
	// accepts from the loopback interface: amqp://guest:guest@127.0.0.1:PORT/.
	URL string
	// TLSURL is the node's AMQP URI over TLS, with Options.TLS; else "".
	TLSURL string
	// CAFile is the PEM file of the CA that signed the TLS listener's
	// certificate, with Options.TLS; else "".
	CAFile string
	// Node is the node's Erlang name, rabbit-<random>@localhost.
	Node string

	dir       string
	ownDir    bool // New made dir, and Close removes it
	server    string
	env       []string
	amqpPort  int
	epmdPort  int
	startedAt time.Duration // the last start's duration

	mu   sync.Mutex
	node *process // nil while stopped
	epmd *process

	rd reader
}

// Start starts a node for t and returns once it accepts AMQP connections;
// it is killed, with every process it started, when t ends. It fails t if
// the node cannot start, with the end of its logs.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith is Start with opts.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := start(t.TempDir(), false, opts)
	if err != nil {
		t.Fatalf("rabbitmqtest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("rabbitmqtest: %v", err)
		}
	})
	t.Logf("rabbitmqtest: node %s started in %s at %s", s.Node, s.startedAt.Round(time.Millisecond), s.URL)
	return s
}

// New starts a node in a new temporary directory, for a package's TestMain
// or a program (the demo, the benchmark), which must Close it. It returns
// once the node accepts AMQP connections. Without the rabbitmq-server
// script (Debian's rabbitmq-server package not installed, and
// $OUTBOX_RELAY_RABBITMQ_BINDIR not set to another directory) its error
// wraps fs.ErrNotExist.
func New(opts Options) (*Server, error) {
	dir, err := os.MkdirTemp("", "rabbitmqtest-")
	if err != nil {
		return nil, fmt.Errorf("rabbitmqtest: %w", err)
	}
	s, err := start(dir, true, opts)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("rabbitmqtest: %w", err)
	}
	return s, nil
}

// StartTime returns how long the last start took, until the node accepted
// an AMQP connection.
func (s *Server) StartTime() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startedAt
}

// PID returns the process ID of the node's Erlang VM (beam.smp), to
// measure its CPU time, or 0 while the node is stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.node == nil {
		return 0
	}
	return s.node.cmd.Process.Pid
}

// start prepares dir and starts epmd and the node.
func start(dir string, ownDir bool, opts Options) (*Server, error) {
	binDir := DefaultBinDir
	if d := os.Getenv(EnvBinDir); d != "" {
		binDir = d
	}
	server := filepath.Join(binDir, "rabbitmq-server")
	if _, err := os.Stat(server); err != nil {
		return nil, fmt.Errorf("no rabbitmq-server (%w); install Debian's rabbitmq-server package, or set %s to the directory holding the rabbitmq-server script", err, EnvBinDir)
	}
	epmdBin, err := findEpmd()
	if err != nil {
		return nil, err
	}
	n := 3
	if opts.TLS {
		n++
	}
	ports, err := freeport.Ports(n)
	if err != nil {
		return nil, err
	}
	var raw [6]byte
	_, _ = rand.Read(raw[:])
	s := &Server{
		Node:     "rabbit-" + hex.EncodeToString(raw[:]) + "@localhost",
		dir:      dir,
		ownDir:   ownDir,
		server:   server,
		amqpPort: ports[0],
		epmdPort: ports[2],
		URL:      fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", ports[0]),
	}
	var tlsFiles *tlsFiles
	if opts.TLS {
		if tlsFiles, err = writeCertificates(dir); err != nil {
			return nil, err
		}
		s.TLSURL = fmt.Sprintf("amqps://guest:guest@127.0.0.1:%d/", ports[3])
		s.CAFile = tlsFiles.ca
	}
	if err := s.writeFiles(ports, opts, tlsFiles); err != nil {
		return nil, err
	}

	s.epmd, err = launch(dir, epmdBin, []string{"-port", strconv.Itoa(s.epmdPort), "-address", "127.0.0.1"}, os.Environ(), filepath.Join(dir, "epmd.out"))
	if err != nil {
		return nil, fmt.Errorf("start epmd: %w", err)
	}
	if err := waitPort(s.epmd, s.epmdPort); err != nil {
		s.Close()
		return nil, fmt.Errorf("start epmd on port %d: %w", s.epmdPort, err)
	}
	if err := s.startNode(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// startNode starts the node and waits until it accepts AMQP connections.
func (s *Server) startNode() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.node != nil {
		return errors.New("the node is running; Stop or Kill it first")
	}
	begin := time.Now()
	p, err := launch(s.dir, s.server, nil, s.env, filepath.Join(s.dir, "node.out"))
	if err != nil {
		return fmt.Errorf("start rabbitmq-server: %w", err)
	}
	s.node = p
	if err := s.waitReady(p); err != nil {
		p.kill()
		s.node = nil
		return fmt.Errorf("start node %s: %w\n%s", s.Node, err, s.logTail())
	}
	s.startedAt = time.Since(begin)
	return nil
}

// waitReady polls until an AMQP connection to the node opens, p exits, or
// StartTimeout passes.
func (s *Server) waitReady(p *process) error {
	deadline := time.Now().Add(StartTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("rabbitmq-server exited: %v", p.err)
		default:
		}
		conn, err := dial(s.URL, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		last = err
		select {
		case <-p.done:
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("no AMQP connection after %s: %v", StartTimeout, last)
}

// Stop stops the node cleanly (SIGTERM, as rabbitmqctl stop does) and waits
// until it exited, killing it after StopTimeout. Its data stays for Start.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.rd.drop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.node == nil {
		t.Fatal("rabbitmqtest: Stop: the node is not running")
	}
	if err := s.node.stop(StopTimeout); err != nil {
		t.Errorf("rabbitmqtest: stop node %s: %v\n%s", s.Node, err, s.logTail())
	}
	s.node = nil
}

// Kill kills the node with SIGKILL, and every process it started, as a
// crash would. Its data stays for Start, which recovers it.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.rd.drop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.node == nil {
		t.Fatal("rabbitmqtest: Kill: the node is not running")
	}
	s.node.kill()
	s.node = nil
}

// Start starts the stopped or killed node again, with the same name, ports
// and data (durable exchanges and queues, and their persistent messages),
// and returns once it accepts AMQP connections.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	if err := s.startNode(); err != nil {
		t.Fatalf("rabbitmqtest: %v", err)
	}
	t.Logf("rabbitmqtest: node %s started again in %s", s.Node, s.StartTime().Round(time.Millisecond))
}

// Running reports whether the node runs (it may still be starting).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node != nil && !s.node.exited()
}

// Close kills the node, every process it started and its epmd, closes the
// readers' connection and, for a Server from New, removes its directory.
// It is safe to call more than once.
func (s *Server) Close() error {
	s.rd.drop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.node != nil {
		s.node.kill()
		s.node = nil
	}
	if s.epmd != nil {
		s.epmd.kill()
		s.epmd = nil
	}
	if s.ownDir {
		s.ownDir = false
		if err := os.RemoveAll(s.dir); err != nil {
			return fmt.Errorf("remove %s: %w", s.dir, err)
		}
	}
	return nil
}

// LogTail returns the end of the node's output and of its log, for the
// message of a failed test.
func (s *Server) LogTail() string { return s.logTail() }

// logTail returns the end of the node's output and log, for errors.
func (s *Server) logTail() string {
	var out string
	for _, f := range []string{filepath.Join(s.dir, "node.out"), filepath.Join(s.dir, "log", s.Node+".log")} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		out += "--- " + f + " (end) ---\n" + string(b) + "\n"
	}
	return out
}

// dial opens an AMQP connection to url, giving up after timeout.
func dial(url string, timeout time.Duration) (*amqp.Connection, error) {
	return amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(timeout)})
}

// DialAs connects to the node at url with the connection name name, which
// the node's management tools show, giving up after five seconds: for
// programs around a node, such as a demo's or a benchmark's consumer.
func DialAs(url, name string) (*amqp.Connection, error) {
	conn, err := amqp.DialConfig(url, amqp.Config{
		Dial:       amqp.DefaultDial(5 * time.Second),
		Properties: amqp.Table{"connection_name": name},
	})
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	return conn, nil
}

// waitPort polls until p listens on port of 127.0.0.1.
func waitPort(p *process, port int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited: %v", p.err)
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// findEpmd returns the path of epmd: on PATH, else in the Erlang runtime.
func findEpmd() (string, error) {
	if p, err := exec.LookPath("epmd"); err == nil {
		return p, nil
	}
	matches, _ := filepath.Glob("/usr/lib/erlang/erts-*/bin/epmd")
	if len(matches) > 0 {
		return matches[len(matches)-1], nil
	}
	return "", errors.New("no epmd on PATH or in /usr/lib/erlang/erts-*/bin; install Erlang (Debian's erlang-base)")
}

// Ctl runs rabbitmqctl with args against the node (as the node's user,
// cookie and epmd) and returns its output, failing t if it fails. It takes
// a second or two: the command starts an Erlang VM of its own.
func (s *Server) Ctl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(filepath.Dir(s.server), "rabbitmqctl"), append([]string{"-n", s.Node}, args...)...)
	cmd.Dir = s.dir
	cmd.Env = s.env
	cmd.SysProcAttr = procAttr()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqtest: rabbitmqctl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// Sync makes the node write its definitions (exchanges, queues, bindings)
// to disk now. RabbitMQ 3.10 writes them a moment later, and a node killed
// within a second or two of a declaration may come back without it: seen
// with a binding, the queue and the exchange still there. Call Sync before
// Kill when the test needs what it just declared.
func (s *Server) Sync(t testing.TB) {
	t.Helper()
	s.Ctl(t, "eval", "mnesia:dump_log().")
}
