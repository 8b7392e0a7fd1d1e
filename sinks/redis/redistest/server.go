package redistest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outbox-relay/outbox-relay/internal/freeport"
	"github.com/outbox-relay/outbox-relay/internal/testpki"
)

// EnvServer names the redis-server program to run instead of the one on
// PATH.
const EnvServer = "OUTBOX_RELAY_REDIS_SERVER"

// Timeouts of the server's lifecycle: a start or a stop that takes longer
// fails the test.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second
)

// logFile is the server's log, in its directory.
const logFile = "redis.log"

// Options configures StartWith. The zero value is Start's server.
type Options struct {
	// Password makes the server require it of the default user
	// (requirepass); URL holds it.
	Password string
	// TLS makes the server accept TLS connections only, with a certificate
	// for 127.0.0.1 and localhost signed by a certificate authority of its
	// own, whose certificate is in Server.CAFile. URL is then rediss://.
	TLS bool
	// ClientCerts makes a TLS server require client certificates signed by
	// its authority (tls-auth-clients yes), such as Server.ClientCertFile.
	ClientCerts bool
	// Args are more redis-server arguments, after the others so that they
	// override them: "--appendonly", "no".
	Args []string
}

// Server is a redis-server started by Start. Its methods are for the test
// goroutine that started it, except the readers, which are safe to call
// concurrently with each other.
type Server struct {
	// URL is redis://127.0.0.1:PORT/0, rediss:// with Options.TLS, with
	// Options.Password in it when set.
	URL string
	// Addr is the server's address, 127.0.0.1:PORT; Start keeps it.
	Addr string
	// Password is Options.Password.
	Password string
	// Dir holds the server's data (appendonlydir/), its log (redis.log)
	// and its TLS files.
	Dir string
	// CAFile is the PEM certificate of the authority that signed the
	// server's certificate, and ClientCertFile and ClientKeyFile a client
	// certificate and key it signed; set with Options.TLS.
	CAFile, ClientCertFile, ClientKeyFile string

	bin  string
	args []string
	tls  *tls.Config // the readers', nil without TLS

	mu      sync.Mutex
	running *process // nil when stopped
	ownDir  bool     // Close removes Dir: a Server from New
}

// process is one run of the server.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait returned
	err    error         // cmd.Wait's, once exited is closed
}

// Start starts a server for t, stopped when t ends, with the default
// Options. It skips t under -short and fails it when the server cannot
// start.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith starts a server for t with opts, stopped when t ends. It skips
// t under -short and fails it when the server cannot start, with the end
// of the server's log.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("redistest: needs redis-server; skipped by -short")
	}
	bin, err := program()
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	s := &Server{Dir: t.TempDir(), Password: opts.Password, bin: bin}
	if opts.TLS {
		if err := s.writeCertificates(); err != nil {
			t.Fatalf("redistest: %v", err)
		}
	}
	t.Cleanup(func() { s.kill(t) })
	if err := s.launch(opts); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return s
}

// New starts a server as StartWith does, with its data in a new temporary
// directory, for a program or a package's TestMain, which must call Close.
// Unlike StartWith it never skips: without the redis-server program its
// error wraps exec.ErrNotFound and says how to install it. On Linux, as
// with StartWith, the server dies with the calling process (Pdeathsig) and
// runs in a process group of its own.
func New(opts Options) (*Server, error) {
	bin, err := program()
	if err != nil {
		return nil, fmt.Errorf("redistest: %w", err)
	}
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		return nil, fmt.Errorf("redistest: make the server's directory: %w", err)
	}
	s := &Server{Dir: dir, Password: opts.Password, bin: bin, ownDir: true}
	if opts.TLS {
		err = s.writeCertificates()
	}
	if err == nil {
		err = s.launch(opts)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("redistest: %w", err), s.Close())
	}
	return s, nil
}

// launch starts the server on a free port, with opts.
func (s *Server) launch(opts Options) error {
	for attempt := 1; ; attempt++ {
		port, err := freeport.Port()
		if err != nil {
			return err
		}
		s.configure(port, opts)
		err = s.start()
		if err == nil {
			return nil
		}
		// Another process may have bound the port since freeport.Port released
		// it; then try another one.
		if attempt == 3 || !freeport.Taken(port) {
			return err
		}
	}
}

// Close kills the server, as Kill does, if it runs, and for a Server from
// New removes its directory. It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	p := s.running
	own := s.ownDir
	s.ownDir = false
	s.mu.Unlock()
	var err error
	if p != nil {
		if herr := s.halt(p, syscall.SIGKILL); herr != nil {
			err = fmt.Errorf("redistest: kill redis-server on %s: %w", s.Addr, herr)
		}
	}
	if own {
		if rerr := os.RemoveAll(s.Dir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("redistest: remove %s: %w", s.Dir, rerr))
		}
	}
	return err
}

// PID returns the process ID of the running server, to measure it, or 0
// when it is stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running == nil {
		return 0
	}
	return s.running.cmd.Process.Pid
}

// program returns the path of the redis-server program.
func program() (string, error) {
	if p := os.Getenv(EnvServer); p != "" {
		return p, nil
	}
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", fmt.Errorf("find redis-server: %w; install it (apt-get install redis-server) or set %s to its path", err, EnvServer)
	}
	return p, nil
}

// configure sets s's address, URL and arguments for port.
func (s *Server) configure(port int, opts Options) {
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	u := url.URL{Scheme: "redis", Host: s.Addr, Path: "/0"}
	if opts.Password != "" {
		u.User = url.UserPassword("", opts.Password)
	}
	s.args = []string{
		"--bind", "127.0.0.1",
		"--dir", s.Dir,
		"--logfile", logFile,
		"--daemonize", "no",
		"--appendonly", "yes",
		"--appendfsync", "always",
		"--save", "",
		"--protected-mode", "yes",
	}
	if opts.TLS {
		u.Scheme = "rediss"
		auth := "no"
		if opts.ClientCerts {
			auth = "yes"
		}
		s.args = append(s.args,
			"--port", "0",
			"--tls-port", strconv.Itoa(port),
			"--tls-cert-file", filepath.Join(s.Dir, testpki.ServerCertFile),
			"--tls-key-file", filepath.Join(s.Dir, testpki.ServerKeyFile),
			"--tls-ca-cert-file", s.CAFile,
			"--tls-auth-clients", auth)
	} else {
		s.args = append(s.args, "--port", strconv.Itoa(port))
	}
	if opts.Password != "" {
		s.args = append(s.args, "--requirepass", opts.Password)
	}
	s.args = append(s.args, opts.Args...)
	s.URL = u.String()
}

// Start starts the server again after Stop or Kill, on the same address
// and with the same data: it replays the append-only file, and returns
// once the server answers PING. A running server is left alone.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	running := s.running != nil
	s.mu.Unlock()
	if running {
		return
	}
	if err := s.start(); err != nil {
		t.Fatalf("redistest: %v", err)
	}
}

// start runs the server and waits until it answers PING.
func (s *Server) start() error {
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.Dir
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	s.mu.Lock()
	s.running = p
	s.mu.Unlock()
	if err := s.waitReady(p); err != nil {
		s.halt(p, syscall.SIGKILL)
		return fmt.Errorf("start redis-server on %s in %s: %w%s", s.Addr, s.Dir, err, s.logTail(20))
	}
	return nil
}

// waitReady polls PING until the server answers PONG (not LOADING), p
// exits, or startTimeout passes.
func (s *Server) waitReady(p *process) error {
	deadline := time.Now().Add(startTimeout)
	var last error
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("redis-server exited: %v", p.err)
		default:
		}
		if last = s.ping(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no PONG within %s: %w", startTimeout, last)
		}
		select {
		case <-p.exited:
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// ping sends one PING with a client of its own, so that no failure is
// remembered between attempts, once the port accepts connections: go-redis
// logs every failed dial.
func (s *Server) ping() error {
	conn, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return err
	}
	conn.Close()
	opt := s.options()
	opt.DialTimeout = time.Second
	opt.DialerRetries = 1
	opt.MaxRetries = -1
	c := goredis.NewClient(opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

// Stop stops the server cleanly (SIGTERM, which makes Redis sync its
// append-only file and exit), keeping its data, and waits until it exited.
// A stopped server is left alone.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	p := s.running
	s.mu.Unlock()
	if p == nil {
		return
	}
	if err := s.halt(p, syscall.SIGTERM); err != nil {
		t.Fatalf("redistest: stop redis-server on %s: %v%s", s.Addr, err, s.logTail(20))
	}
}

// Kill kills the server with SIGKILL, as a crash would, and waits until it
// exited. Entries it acknowledged survive: the append-only file was synced
// before each reply. A stopped server is left alone.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.kill(t)
}

func (s *Server) kill(t testing.TB) {
	s.mu.Lock()
	p := s.running
	s.mu.Unlock()
	if p == nil {
		return
	}
	if err := s.halt(p, syscall.SIGKILL); err != nil {
		t.Errorf("redistest: kill redis-server on %s: %v", s.Addr, err)
	}
}

// halt sends sig to p and waits until it exited; after stopTimeout it
// kills it and fails.
func (s *Server) halt(p *process, sig syscall.Signal) error {
	defer func() {
		s.mu.Lock()
		if s.running == p {
			s.running = nil
		}
		s.mu.Unlock()
	}()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("send %v: %w", sig, err)
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	return fmt.Errorf("still running %s after %v; killed it", stopTimeout, sig)
}

// logTail returns the last n lines of the server's log, after a newline,
// or "".
func (s *Server) logTail(n int) string {
	data, err := os.ReadFile(filepath.Join(s.Dir, logFile))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return "\nlast lines of the server log:\n" + strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// options returns go-redis options for a client of the server.
func (s *Server) options() *goredis.Options {
	return &goredis.Options{
		Addr:                  s.Addr,
		Password:              s.Password,
		TLSConfig:             s.tls,
		Protocol:              2,
		DisableIdentity:       true,
		ContextTimeoutEnabled: true,
	}
}

// Client returns a client of the server, independent of any sink, closed
// when t ends: to prepare keys, change settings (CONFIG SET), or read.
func (s *Server) Client(t testing.TB) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(s.options())
	t.Cleanup(func() { _ = c.Close() })
	return c
}
