package pgtest

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// shared is the package's server, set by Main.
var shared struct {
	sync.Mutex
	ran     bool     // Main has run
	cluster *Cluster // nil under -short without an external server
}

// Main runs a package's tests against one private cluster, or against the
// external server named by OUTBOX_RELAY_TEST_PG_DSN, and returns the exit
// code. Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// Under -short without an external server it starts nothing, and Server skips
// the tests that need one. A cluster that cannot start, or an external server
// that cannot be reached or lacks wal_level=logical, fails the package with a
// message on stderr. When tests fail, the end of the server log follows them
// on stderr. Main stops the cluster before it returns.
func Main(m *testing.M) int {
	if !flag.Parsed() {
		flag.Parse()
	}
	c, err := mainCluster()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		return 1
	}
	shared.Lock()
	shared.ran, shared.cluster = true, c
	shared.Unlock()

	code := m.Run()
	if c == nil {
		return code
	}
	if tail := c.LogTail(40); code != 0 && tail != "" {
		fmt.Fprintf(os.Stderr, "pgtest: last lines of the server log:\n%s\n", tail)
	}
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		code = max(code, 1)
	}
	return code
}

// mainCluster returns the server for Main: the external one if EnvDSN is set,
// none under -short, else a new cluster.
func mainCluster() (*Cluster, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		return external(ctx, dsn)
	}
	if testing.Short() {
		return nil, nil
	}
	var opts Options
	if testing.Verbose() {
		opts.Logf = func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "pgtest: "+format+"\n", args...)
		}
	}
	return Start(ctx, opts)
}

// Server returns the server Main started or found for the package. It skips
// t under -short when OUTBOX_RELAY_TEST_PG_DSN is not set, and fails t if the
// package's TestMain does not call Main. The server is shared by every test in
// the package: a test that restarts or stops it disturbs the others, and
// should Start a cluster of its own instead.
func Server(t testing.TB) *Cluster {
	t.Helper()
	shared.Lock()
	ran, c := shared.ran, shared.cluster
	shared.Unlock()
	switch {
	case !ran:
		t.Fatal("pgtest: no server: the package's TestMain must call pgtest.Main, as in func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }")
	case c == nil && testing.Short():
		t.Skip("pgtest: needs PostgreSQL, skipped by -short; set " + EnvDSN + " to run it against a server")
	case c == nil:
		t.Fatal("pgtest: no server")
	}
	return c
}
