package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
)

// Names the benchmark gives what it creates on the server. Databases are
// created and dropped for every run; the slots live in them.
const (
	databasePrefix = "outbox_bench_"
	slotName       = "outbox_bench"
	ceilingSlot    = "outbox_bench_ceiling"
	ceilingAfter   = "outbox_bench_ceiling_after" // pg_recvlogical's copy drained after the relay
	publication    = "outbox_relay"
)

// server is the PostgreSQL server under test: a private cluster, or the one
// --pg-dsn names.
type server struct {
	cluster *pgtest.Cluster // nil for an external server
	dsn     string          // of the server's maintenance database
	binDir  string          // where pg_recvlogical is, for an external server
}

// openServer starts a private cluster when dsn is empty, with fsync on or
// off as fsync says (pgtest's default is off, for tests), else checks that
// the server dsn names has wal_level=logical; an external server keeps its
// own fsync.
func openServer(ctx context.Context, dsn, binDir string, fsync bool) (*server, error) {
	if dsn == "" {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		settings := map[string]string{"fsync": "off"}
		if fsync {
			settings["fsync"] = "on"
		}
		c, err := pgtest.Start(sctx, pgtest.Options{BinDir: binDir, Settings: settings})
		if err != nil {
			return nil, fmt.Errorf("start a private PostgreSQL: %w", err)
		}
		return &server{cluster: c, dsn: c.DSN("")}, nil
	}
	s := &server{dsn: dsn, binDir: binDir}
	if _, err := pgx.ParseConfig(dsn); err != nil {
		return nil, fmt.Errorf("--pg-dsn: %w", err)
	}
	conn, err := s.connect(ctx, "")
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var level string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return nil, fmt.Errorf("read wal_level: %w", err)
	}
	if level != "logical" {
		return nil, fmt.Errorf("the server has wal_level %q; set wal_level=logical and restart it", level)
	}
	return s, nil
}

func (s *server) close() {
	if s.cluster != nil {
		if err := s.cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: stop PostgreSQL:", err)
		}
	}
}

// local reports whether the server runs on this machine, so that its
// processes' CPU can be read from /proc.
func (s *server) local() bool { return s.cluster != nil }

// dsnFor returns the DSN of database on the server; empty means the
// maintenance database.
func (s *server) dsnFor(database string) string {
	if s.cluster != nil {
		return s.cluster.DSN(database)
	}
	if database == "" {
		return s.dsn
	}
	if strings.HasPrefix(s.dsn, "postgres://") || strings.HasPrefix(s.dsn, "postgresql://") {
		if u, err := url.Parse(s.dsn); err == nil {
			u.Path, u.RawPath = "/"+database, ""
			return u.String()
		}
	}
	return s.dsn + " dbname='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(database) + "'"
}

func (s *server) connect(ctx context.Context, database string) (*pgx.Conn, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, s.dsnFor(database))
	if err != nil {
		return nil, fmt.Errorf("connect to database %q: %w", database, err)
	}
	return conn, nil
}

// command returns the PostgreSQL client program name run with args; for a
// private cluster it runs as the server's user.
func (s *server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if s.cluster != nil {
		return s.cluster.Command(ctx, name, args...)
	}
	dir := s.binDir
	if dir == "" {
		dir = newestDebianBinDir()
	}
	if dir != "" {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			name = filepath.Join(dir, name)
		}
	}
	return exec.CommandContext(ctx, name, args...)
}

// newestDebianBinDir returns the newest /usr/lib/postgresql/N/bin, or "".
func newestDebianBinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dirs[i])), 64)
		vj, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dirs[j])), 64)
		return vi > vj
	})
	if len(dirs) == 0 {
		return ""
	}
	return dirs[0]
}

// freshDatabase drops database if a previous run left it, with its slots,
// and creates it empty.
func (s *server) freshDatabase(ctx context.Context, database string) error {
	if err := s.dropDatabase(ctx, database); err != nil {
		return err
	}
	conn, err := s.connect(ctx, "")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// Slots are per server: one a crashed run left in another database
	// would shadow this run's.
	if err := dropSlots(ctx, conn, `slot_name IN ($1, $2, $3)`, slotName, ceilingSlot, ceilingAfter); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{database}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", database, err)
	}
	return nil
}

// dropDatabase ends the sessions of database, drops its replication slots
// and drops it. A missing database is not an error.
func (s *server) dropDatabase(ctx context.Context, database string) error {
	conn, err := s.connect(ctx, "")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if !strings.HasPrefix(database, databasePrefix) {
		return fmt.Errorf("refusing to drop database %q, which the benchmark did not create", database)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = $1 AND pid <> pg_backend_pid()`, database); err != nil {
		return fmt.Errorf("end sessions of database %s: %w", database, err)
	}
	if err := dropSlots(ctx, conn, `database = $1`, database); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{database}.Sanitize()); err != nil {
		return fmt.Errorf("drop database %s: %w", database, err)
	}
	return nil
}

// dropSlots drops the slots pg_replication_slots shows under where,
// retrying for a while those still held by an ending walsender.
func dropSlots(ctx context.Context, conn *pgx.Conn, where string, args ...any) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
			WHERE `+where, args...)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("drop replication slots where %s %v: %w", where, args, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// errNoSlot reports a slot missing from pg_replication_slots.
var errNoSlot = errors.New("no such replication slot")

// slotState is one reading of a slot.
type slotState struct {
	confirmedPast bool  // confirmed_flush_lsn >= the LSN asked about
	lagBytes      int64 // pg_current_wal_lsn() - confirmed_flush_lsn
	activePID     int   // walsender streaming from it, or 0
}

// readSlot reads slot, comparing its confirmed position with lsn.
func readSlot(ctx context.Context, conn *pgx.Conn, slot, lsn string) (slotState, error) {
	var st slotState
	var pid *int32
	var past *bool
	var lag *int64
	err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn >= $2::pg_lsn, active_pid,
			pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, slot, lsn).Scan(&past, &pid, &lag)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, fmt.Errorf("slot %s: %w", slot, errNoSlot)
	}
	if err != nil {
		return st, fmt.Errorf("read slot %s: %w", slot, err)
	}
	if past != nil {
		st.confirmedPast = *past
	}
	if pid != nil {
		st.activePID = int(*pid)
	}
	if lag != nil {
		st.lagBytes = *lag
	}
	return st, nil
}
