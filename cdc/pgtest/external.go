package pgtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the environment variable holding the DSN of an external
// server for Main to use instead of starting a cluster.
const EnvDSN = "OUTBOX_RELAY_TEST_PG_DSN"

// remote is the connection string of an external server.
type remote struct {
	dsn  string
	url  *url.URL // nil for a keyword/value string
	host string
	port int
}

// external returns a Cluster for the server dsn names, once it has checked
// that the server accepts connections and has wal_level=logical.
func external(ctx context.Context, dsn string) (*Cluster, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvDSN, err)
	}
	r := &remote{dsn: dsn, host: cfg.Host, port: int(cfg.Port)}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if r.url, err = url.Parse(dsn); err != nil {
			return nil, fmt.Errorf("%s: %w", EnvDSN, err)
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s (%s): %w", r.addr(), EnvDSN, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var level string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return nil, fmt.Errorf("read wal_level of %s: %w", r.addr(), err)
	}
	if level != "logical" {
		return nil, fmt.Errorf("server %s (%s) has wal_level %q: set wal_level=logical and restart it", r.addr(), EnvDSN, level)
	}
	// Client programs such as pg_recvlogical are still local; without them,
	// Command looks the program up in PATH.
	binDir, _ := findBinDir()
	return &Cluster{binDir: binDir, port: r.port, remote: r, logf: func(string, ...any) {}}, nil
}

// withDatabase returns the DSN with its database replaced by database, or
// unchanged if database is empty.
func (r *remote) withDatabase(database string) string {
	if database == "" {
		return r.dsn
	}
	if r.url != nil {
		u := *r.url
		u.Path, u.RawPath = "/"+database, ""
		return u.String()
	}
	// In a keyword/value string the last dbname wins.
	quoted := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(database)
	return r.dsn + " dbname='" + quoted + "'"
}

// addr returns the server's host:port, for messages that must not show the
// password.
func (r *remote) addr() string {
	return net.JoinHostPort(r.host, strconv.Itoa(r.port))
}
