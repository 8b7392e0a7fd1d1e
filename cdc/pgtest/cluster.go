package pgtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/freeport"
)

// Options configures Start. The zero value is ready to use.
type Options struct {
	// Settings are postgresql.conf parameters that override or extend the
	// defaults: wal_level=logical, max_replication_slots=40,
	// max_wal_senders=40, wal_sender_timeout=60s, max_connections=500,
	// shared_buffers=128MB, fsync=off, full_page_writes=off,
	// synchronous_commit=on. Start rejects listen_addresses, port and
	// unix_socket_directories, which pgtest sets.
	Settings map[string]string

	// BinDir is the directory holding initdb, pg_ctl and postgres. Empty means
	// $OUTBOX_RELAY_PG_BINDIR, else the newest /usr/lib/postgresql/*/bin, else
	// pg_config --bindir, else PATH.
	BinDir string

	// Logf receives a line for each step of the cluster's life: initdb,
	// start, restart, stop. Nil discards them.
	Logf func(format string, args ...any)
}

// Cluster is a private PostgreSQL server started by Start, or an external
// server named by OUTBOX_RELAY_TEST_PG_DSN (see Local). Its methods are safe
// for concurrent use; Restart, Shutdown, Start and Stop run one at a time, and
// while they run other sessions see the server go away.
type Cluster struct {
	binDir string // "" if an external server's binaries were not found
	port   int
	dir    string              // data directory; "" for an external server
	cred   *syscall.Credential // the server's user; nil means the current user
	remote *remote             // the external server; nil for a local one
	logf   func(format string, args ...any)

	mu       sync.Mutex
	stopped  bool
	watchdog *watchdog
}

// errStopped reports a lifecycle call on a cluster that Stop has removed.
var errStopped = errors.New("cluster was removed by Stop")

// errExternal reports a lifecycle call on an external server.
var errExternal = errors.New("the server is external (" + EnvDSN + "); check Local and skip tests that need to stop it")

// logFile is the server log inside the data directory.
const logFile = "postgres.log"

// Start creates a cluster in a new temporary directory, starts it on a free
// port of 127.0.0.1 and returns once it accepts connections. The caller must
// call Stop. Its error includes the output of the program that failed and the
// end of the server log. ctx bounds the start only, not the cluster's life.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	conf, err := settings(opts.Settings)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	binDir := opts.BinDir
	if binDir == "" {
		if binDir, err = findBinDir(); err != nil {
			return nil, fmt.Errorf("start postgres: %w", err)
		}
	}
	cred, err := serverUser()
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	// Not t.TempDir: its parents are private to the current user, and the
	// server may run as another.
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	c := &Cluster{binDir: binDir, dir: dir, cred: cred, logf: opts.Logf}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	if err := c.init(ctx, conf); err != nil {
		c.discard()
		return nil, fmt.Errorf("start postgres in %s: %w", dir, err)
	}
	return c, nil
}

// init creates the cluster in c.dir and starts it.
func (c *Cluster) init(ctx context.Context, conf map[string]string) error {
	if err := os.Chmod(c.dir, 0o700); err != nil {
		return err
	}
	if err := chownAll(c.dir, c.cred); err != nil {
		return err
	}
	wd, err := startWatchdog(c)
	if err != nil {
		return err
	}
	c.watchdog = wd

	c.logf("initdb -D %s with %s", c.dir, c.binDir)
	if err := c.run(ctx, "initdb", "-D", c.dir, "--auth=trust", "-U", "postgres",
		"--encoding=UTF8", "--locale=C", "--no-sync"); err != nil {
		return err
	}
	if err := c.allowReplication(); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		port, err := freeport.Port()
		if err != nil {
			return err
		}
		if err := c.writeConf(conf, port); err != nil {
			return err
		}
		c.port = port
		err = c.start(ctx)
		if err == nil {
			return nil
		}
		// Another process may have bound the port since freeport.Port released
		// it; then try another one.
		_ = c.halt(ctx, "immediate")
		if attempt == 3 || !freeport.Taken(port) {
			return err
		}
		c.logf("port %d was taken before postgres could listen on it; trying another", port)
	}
}

// start runs pg_ctl start and waits until the server accepts connections.
func (c *Cluster) start(ctx context.Context) error {
	err := c.run(ctx, "pg_ctl", "start", "-D", c.dir, "-l", c.logPath(), "-w", "-t", "60")
	if err != nil {
		return c.withLog(err)
	}
	c.logf("postgres listening on 127.0.0.1:%d, data in %s", c.port, c.dir)
	return nil
}

// halt runs pg_ctl stop -m mode. A server that is not running is not an
// error.
func (c *Cluster) halt(ctx context.Context, mode string) error {
	err := c.run(ctx, "pg_ctl", "stop", "-D", c.dir, "-m", mode, "-w", "-t", "60")
	if err != nil && !c.running(ctx) {
		return nil
	}
	return err
}

// running reports whether pg_ctl status finds the server running, and true
// when it cannot tell.
func (c *Cluster) running(ctx context.Context) bool {
	err := c.command(ctx, "pg_ctl", "status", "-D", c.dir).Run()
	var exit *exec.ExitError
	// pg_ctl status exits with 3 when no server runs in the directory.
	return !errors.As(err, &exit) || exit.ExitCode() != 3
}

// withLog appends the end of the server log to the output in err, if err is
// a failed program.
func (c *Cluster) withLog(err error) error {
	var ce *commandError
	if tail := c.LogTail(20); tail != "" && errors.As(err, &ce) {
		ce.output += "\nserver log, last lines:\n" + tail
	}
	return err
}

// discard stops whatever Start got running and removes the directory.
func (c *Cluster) discard() {
	if c.watchdog != nil {
		_ = c.watchdog.close()
	}
	_ = os.RemoveAll(c.dir)
}

// DSN returns a URL connection string for database on the server, for pgx
// and for the -d flag of PostgreSQL's programs. Empty database means
// postgres, or for an external server the database its DSN names. A local
// cluster's DSN has the form
// postgres://postgres@127.0.0.1:PORT/DATABASE?sslmode=disable.
func (c *Cluster) DSN(database string) string {
	if c.remote != nil {
		return c.remote.withDatabase(database)
	}
	if database == "" {
		database = "postgres"
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the server's TCP port. It stays the same across Restart,
// Shutdown and Start.
func (c *Cluster) Port() int { return c.port }

// BinDir returns the directory holding the PostgreSQL programs
// (pg_recvlogical, psql, pg_ctl). For an external server it is where local
// binaries were found, or "" if none were.
func (c *Cluster) BinDir() string { return c.binDir }

// Local reports whether c is a cluster this process started, which Restart,
// Shutdown and Start can control, rather than an external server.
func (c *Cluster) Local() bool { return c.remote == nil }

// Restart restarts the server with pg_ctl restart -m mode and returns once it
// accepts connections again, on the same port. mode is "fast", which ends
// sessions and writes a checkpoint, or "immediate", which kills the server
// like a crash so that it recovers from WAL; empty means fast. Committed data
// survives either. Every session, replication included, is cut. It fails for
// an external server.
func (c *Cluster) Restart(ctx context.Context, mode string) error {
	if err := c.controllable(mode); err != nil {
		return fmt.Errorf("restart postgres: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return fmt.Errorf("restart postgres in %s: %w", c.dir, errStopped)
	}
	c.logf("restarting postgres on port %d (%s)", c.port, stopMode(mode))
	err := c.run(ctx, "pg_ctl", "restart", "-D", c.dir, "-l", c.logPath(),
		"-m", stopMode(mode), "-w", "-t", "60")
	if err != nil {
		return fmt.Errorf("restart postgres in %s: %w", c.dir, c.withLog(err))
	}
	return nil
}

// Shutdown stops the server with pg_ctl stop -m mode and keeps its data, so
// that Start can bring it back; mode is as for Restart. A server that is not
// running is not an error. It fails for an external server.
func (c *Cluster) Shutdown(ctx context.Context, mode string) error {
	if err := c.controllable(mode); err != nil {
		return fmt.Errorf("shut down postgres: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return fmt.Errorf("shut down postgres in %s: %w", c.dir, errStopped)
	}
	c.logf("shutting down postgres on port %d (%s)", c.port, stopMode(mode))
	if err := c.halt(ctx, stopMode(mode)); err != nil {
		return fmt.Errorf("shut down postgres in %s: %w", c.dir, err)
	}
	return nil
}

// Start starts a server that Shutdown stopped, on the same port, and returns
// once it accepts connections. A running server is not an error. It fails for
// an external server.
func (c *Cluster) Start(ctx context.Context) error {
	if c.remote != nil {
		return fmt.Errorf("start postgres: %w", errExternal)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return fmt.Errorf("start postgres in %s: %w", c.dir, errStopped)
	}
	if c.running(ctx) {
		return nil
	}
	if err := c.start(ctx); err != nil {
		return fmt.Errorf("start postgres in %s: %w", c.dir, err)
	}
	return nil
}

// controllable checks that c is local and mode is a shutdown mode.
func (c *Cluster) controllable(mode string) error {
	if c.remote != nil {
		return errExternal
	}
	switch mode {
	case "", "fast", "immediate":
		return nil
	}
	return fmt.Errorf("shutdown mode %q: want fast or immediate", mode)
}

// stopMode returns mode, or fast if mode is empty.
func stopMode(mode string) string {
	if mode == "" {
		return "fast"
	}
	return mode
}

// Stop stops the server, falling back to an immediate shutdown if a fast one
// fails, and removes its directory. Later calls do nothing and return nil, as
// does Stop on an external server.
func (c *Cluster) Stop() error {
	if c.remote != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := c.halt(ctx, "fast")
	if err != nil {
		c.logf("fast shutdown of postgres on port %d: %v; shutting down immediately", c.port, err)
		err = c.halt(ctx, "immediate")
	}
	err = errors.Join(err, c.watchdog.close(), os.RemoveAll(c.dir))
	if err != nil {
		return fmt.Errorf("stop postgres in %s: %w", c.dir, err)
	}
	c.logf("stopped postgres on port %d and removed %s", c.port, c.dir)
	return nil
}

// Command returns a command that runs the program name from BinDir, such as
// pg_recvlogical or psql, with args; pass it -d with a DSN. For a local
// cluster the program runs in the cluster's directory, with no PG*
// variables in its environment, and, when the tests run as root, as the
// postgres user: prefer cmd.Stdout to output files, which that user must be
// able to write (t.TempDir is not). Keep cmd.SysProcAttr and add to cmd.Env
// rather than replace them.
func (c *Cluster) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if c.remote == nil {
		return c.command(ctx, name, args...)
	}
	if c.binDir != "" {
		name = filepath.Join(c.binDir, name)
	}
	return exec.CommandContext(ctx, name, args...)
}

// LogTail returns the last n lines of the server log, for failure messages,
// or "" for an external server or once Stop has removed the log.
func (c *Cluster) LogTail(n int) string {
	if c.remote != nil || n <= 0 {
		return ""
	}
	data, err := os.ReadFile(c.logPath())
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// LogValue describes the server for log/slog without its password.
func (c *Cluster) LogValue() slog.Value {
	if c.remote != nil {
		return slog.GroupValue(slog.Bool("local", false), slog.String("addr", c.remote.addr()))
	}
	return slog.GroupValue(
		slog.Bool("local", true),
		slog.String("addr", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port))),
		slog.String("dir", c.dir),
	)
}

func (c *Cluster) logPath() string { return filepath.Join(c.dir, logFile) }
