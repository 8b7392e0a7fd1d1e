package pgtest_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// connect opens a connection to dsn that t closes when it ends.
func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect to %s: %v", dsn, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// query runs sql on conn and scans its single value into a string.
func query(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var v string
	if err := conn.QueryRow(t.Context(), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// execSQL runs sql on conn.
func execSQL(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestServer(t *testing.T) {
	srv := pgtest.Server(t)
	conn := connect(t, srv.DSN(""))
	if got := query(t, conn, "SHOW wal_level"); got != "logical" {
		t.Errorf("wal_level = %q, want logical", got)
	}
	if !srv.Local() {
		return
	}
	want := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", srv.Port())
	if got := srv.DSN(""); got != want {
		t.Errorf("DSN(\"\") = %q, want %q", got, want)
	}
	for setting, want := range map[string]string{
		"max_replication_slots": "40",
		"max_wal_senders":       "40",
		"fsync":                 "off",
		"listen_addresses":      "127.0.0.1",
		"port":                  strconv.Itoa(srv.Port()),
	} {
		if got := query(t, conn, "SELECT current_setting($1)", setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
}

func TestNewDatabase(t *testing.T) {
	srv := pgtest.Server(t)
	admin := connect(t, srv.DSN(""))
	var names [2]string
	t.Run("isolated", func(t *testing.T) {
		a := connect(t, pgtest.NewDatabase(t))
		b := connect(t, pgtest.NewDatabase(t))
		names[0] = query(t, a, "SELECT current_database()")
		names[1] = query(t, b, "SELECT current_database()")
		if names[0] == names[1] {
			t.Fatalf("two NewDatabase calls gave the same database %s", names[0])
		}
		execSQL(t, a, "CREATE TABLE only_in_a (id int)")
		if n := query(t, b, "SELECT count(*)::text FROM pg_tables WHERE tablename = 'only_in_a'"); n != "0" {
			t.Errorf("table created in %s is visible in %s", names[0], names[1])
		}
		// An idle slot must not keep the database from being dropped.
		execSQL(t, a, "SELECT pg_create_logical_replication_slot('idle', 'pgoutput')")
	})
	for _, name := range names {
		if n := query(t, admin, "SELECT count(*)::text FROM pg_database WHERE datname = $1", name); n != "0" {
			t.Errorf("database %s still exists after its test ended", name)
		}
		if n := query(t, admin, "SELECT count(*)::text FROM pg_replication_slots WHERE database = $1", name); n != "0" {
			t.Errorf("database %s left %s replication slots", name, n)
		}
	}
}

func TestLogicalSlot(t *testing.T) {
	conn := connect(t, pgtest.NewDatabase(t))
	execSQL(t, conn, "CREATE TABLE outbox (id int PRIMARY KEY, payload text)")
	execSQL(t, conn, "CREATE PUBLICATION outbox_pub FOR TABLE outbox")
	execSQL(t, conn, "SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
	execSQL(t, conn, "INSERT INTO outbox VALUES (1, 'hello')")
	got := query(t, conn, `SELECT count(*)::text FROM pg_logical_slot_peek_binary_changes('s', NULL, NULL,
		'proto_version', '1', 'publication_names', 'outbox_pub')`)
	// BEGIN, RELATION, INSERT, COMMIT.
	if got != "4" {
		t.Errorf("slot s holds %s pgoutput messages after one insert, want 4", got)
	}
}

// TestNewDatabaseEndsReplication checks that dropping a test's database ends
// a replication stream that is still reading one of its slots.
func TestNewDatabaseEndsReplication(t *testing.T) {
	srv := pgtest.Server(t)
	admin := connect(t, srv.DSN(""))
	var name string
	t.Run("stream", func(t *testing.T) {
		var (
			cmd    *exec.Cmd
			stderr bytes.Buffer
			done   = make(chan error, 1)
		)
		// Registered before NewDatabase, so it runs after the database is
		// dropped: the drop itself must end the stream.
		t.Cleanup(func() {
			if cmd == nil || cmd.Process == nil {
				return
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("pg_recvlogical still streams after its database was dropped")
				cmd.Process.Kill()
				<-done
			}
		})
		dsn := pgtest.NewDatabase(t)
		conn := connect(t, dsn)
		name = query(t, conn, "SELECT current_database()")
		execSQL(t, conn, "CREATE PUBLICATION p FOR ALL TABLES")
		execSQL(t, conn, "SELECT pg_create_logical_replication_slot('s', 'pgoutput')")

		cmd = srv.Command(context.Background(), "pg_recvlogical", "-d", dsn, "--slot", "s",
			"--start", "--no-loop", "-o", "proto_version=1", "-o", "publication_names=p", "-f", "-")
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start pg_recvlogical: %v", err)
		}
		go func() { done <- cmd.Wait() }()
		deadline := time.Now().Add(10 * time.Second)
		for query(t, admin, "SELECT active::text FROM pg_replication_slots WHERE slot_name = 's' AND database = $1", name) != "true" {
			if time.Now().After(deadline) {
				t.Fatalf("slot s is not active 10s after starting pg_recvlogical; its stderr: %s", stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	if n := query(t, admin, "SELECT count(*)::text FROM pg_database WHERE datname = $1", name); n != "0" {
		t.Errorf("database %s still exists after its test ended", name)
	}
}

func TestCommand(t *testing.T) {
	srv := pgtest.Server(t)
	out, err := srv.Command(t.Context(), "pg_recvlogical", "--version").Output()
	if err != nil {
		t.Fatalf("pg_recvlogical --version: %v", err)
	}
	if !strings.HasPrefix(string(out), "pg_recvlogical (PostgreSQL) ") {
		t.Errorf("pg_recvlogical --version printed %q", out)
	}
	out, err = srv.Command(t.Context(), "psql", "-d", srv.DSN(""), "-XAtc", "SELECT 6 * 7").CombinedOutput()
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "42" {
		t.Errorf("psql printed %q, want 42", got)
	}
}

func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a private cluster; skipped by -short")
	}
	t.Parallel()
	ctx := t.Context()
	c, err := pgtest.Start(ctx, pgtest.Options{
		Settings: map[string]string{"max_replication_slots": "7"},
		Logf:     t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			c.Stop()
		}
	})
	port := c.Port()
	conn := connect(t, c.DSN(""))
	if got := query(t, conn, "SHOW max_replication_slots"); got != "7" {
		t.Errorf("max_replication_slots = %s, want 7 from Options.Settings", got)
	}
	execSQL(t, conn, "CREATE TABLE kept (id int)")
	execSQL(t, conn, "INSERT INTO kept VALUES (1), (2)")
	execSQL(t, conn, "SELECT pg_create_logical_replication_slot('kept', 'pgoutput')")
	started := query(t, conn, "SELECT pg_postmaster_start_time()::text")

	if err := c.Restart(ctx, "immediate"); err != nil {
		t.Fatal(err)
	}
	if c.Port() != port {
		t.Errorf("Port() = %d after Restart, want %d", c.Port(), port)
	}
	conn = connect(t, c.DSN(""))
	if got := query(t, conn, "SELECT pg_postmaster_start_time()::text"); got == started {
		t.Errorf("server start time is still %s after Restart", got)
	}
	if got := query(t, conn, "SELECT count(*)::text FROM kept"); got != "2" {
		t.Errorf("table kept has %s rows after an immediate restart, want 2", got)
	}
	if got := query(t, conn, "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'kept'"); got != "1" {
		t.Errorf("slot kept is gone after an immediate restart")
	}

	for range 2 { // Shutdown and Start tolerate a server already in the state they want.
		if err := c.Shutdown(ctx, "fast"); err != nil {
			t.Fatal(err)
		}
	}
	if conn, err := pgx.Connect(ctx, c.DSN("")); err == nil {
		conn.Close(ctx)
		t.Fatal("connected to the server after Shutdown")
	}
	for range 2 {
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	conn = connect(t, c.DSN(""))
	if got := query(t, conn, "SELECT count(*)::text FROM kept"); got != "2" {
		t.Errorf("table kept has %s rows after Shutdown and Start, want 2", got)
	}
	if tail := c.LogTail(50); !strings.Contains(tail, "database system is ready to accept connections") {
		t.Errorf("LogTail(50) does not show the server starting:\n%s", tail)
	}
	if err := c.Restart(ctx, "smartest"); err == nil {
		t.Error(`Restart(ctx, "smartest") succeeded, want an error`)
	}

	dir := dataDir(t, c)
	pid := postmasterPID(t, dir)
	stopped = true
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	checkGone(t, pid, dir, port, 0)
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := c.Restart(ctx, "fast"); err == nil {
		t.Error("Restart after Stop succeeded, want an error")
	}
}

func TestStartError(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a private cluster; skipped by -short")
	}
	t.Parallel()
	if _, err := pgtest.Start(t.Context(), pgtest.Options{Settings: map[string]string{"port": "5432"}}); err == nil {
		t.Error("Start with Settings[port] succeeded, want an error")
	}

	_, err := pgtest.Start(t.Context(), pgtest.Options{Settings: map[string]string{"shared_buffers": "plenty"}})
	if err == nil {
		t.Fatal("Start with shared_buffers=plenty succeeded, want an error")
	}
	// The error shows the server log, which names the bad setting.
	if !strings.Contains(err.Error(), `"shared_buffers"`) {
		t.Errorf("Start error does not show the server log:\n%v", err)
	}
	m := regexp.MustCompile(`^start postgres in (\S+):`).FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("Start error does not name the directory:\n%v", err)
	}
	if _, err := os.Stat(m[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Start left %s behind after failing: %v", m[1], err)
	}
}

// TestOrphanedCluster kills a process that started a cluster and checks that
// the cluster goes away with it.
func TestOrphanedCluster(t *testing.T) {
	if os.Getenv("PGTEST_ORPHAN") == "1" {
		startAndHang(t)
		return
	}
	if testing.Short() {
		t.Skip("starts a private cluster; skipped by -short")
	}
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestOrphanedCluster$", "-test.short")
			cmd.Env = append(os.Environ(), "PGTEST_ORPHAN=1")
			cmd.Stderr = os.Stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var pid, port int
			var dir string
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if _, err := fmt.Sscanf(sc.Text(), "cluster %d %d %s", &pid, &port, &dir); err == nil {
					break
				}
			}
			if dir == "" {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatal("the child process reported no cluster")
			}
			cmd.Process.Signal(sig)
			cmd.Wait()
			checkGone(t, pid, dir, port, 30*time.Second)
		})
	}
}

// startAndHang starts a cluster, reports it on stdout and waits to be killed.
func startAndHang(t *testing.T) {
	c, err := pgtest.Start(t.Context(), pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := dataDir(t, c)
	fmt.Printf("cluster %d %d %s\n", postmasterPID(t, dir), c.Port(), dir)
	time.Sleep(time.Minute)
	t.Fatal("not killed within a minute")
}

// dataDir returns the data directory c reports to log/slog.
func dataDir(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	for _, a := range c.LogValue().Group() {
		if a.Key == "dir" {
			return a.Value.String()
		}
	}
	t.Fatalf("%v has no dir", slog.AnyValue(c))
	return ""
}

// postmasterPID returns the server process ID from dir/postmaster.pid.
func postmasterPID(t *testing.T, dir string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(data), "\n", 2)[0])
	if err != nil {
		t.Fatalf("parse postmaster.pid: %v", err)
	}
	return pid
}

// checkGone checks, for up to wait, that the server process pid has exited,
// that nothing listens on port and that dir was removed.
func checkGone(t *testing.T, pid int, dir string, port int, wait time.Duration) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		_, statErr := os.Stat(dir)
		ln, listenErr := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if listenErr == nil {
			ln.Close()
		}
		running := alive(pid)
		if !running && errors.Is(statErr, os.ErrNotExist) && listenErr == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server left behind: process %d running: %v; stat %s: %v; listen on port %d: %v",
				pid, running, dir, statErr, port, listenErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive reports whether process pid runs; a zombie does not.
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
