package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/internal/state"
	"github.com/outbox-relay/outbox-relay/schema"
)

// defaultPruneBatch is --batch: rows one prune statement deletes at most,
// about.
const defaultPruneBatch = 10000

// maxHorizonAge bounds, in transaction IDs, how far the server may have gone
// past a horizon's snapshot for prune to use it: far below 2^31, where
// CommittedIn's 32-bit arithmetic stops being exact.
const maxHorizonAge = 1 << 30

// retention is a flag.Value of a duration that also takes days: 7d, 1d12h,
// 36h, 0s.
type retention struct {
	d   time.Duration
	set bool
}

func (r *retention) String() string {
	if r == nil {
		return "0s"
	}
	return r.d.String()
}

func (r *retention) Set(s string) error {
	d, err := parseRetention(s)
	if err != nil {
		return err
	}
	r.d, r.set = d, true
	return nil
}

// parseRetention reads a non-negative Go duration, optionally led by a
// number of days: "7d", "1d12h", "90m".
func parseRetention(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("empty duration: want one such as 7d, 36h or 90m (0s for every confirmed row)")
	}
	var days time.Duration
	rest := s
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.ParseUint(s[:i], 10, 16)
		if err != nil {
			return 0, fmt.Errorf("%q: want a duration such as 7d, 36h or 90m", s)
		}
		days, rest = time.Duration(n)*24*time.Hour, s[i+1:]
	}
	var d time.Duration
	if rest != "" {
		var err error
		if d, err = time.ParseDuration(rest); err != nil || d < 0 {
			return 0, fmt.Errorf("%q: want a duration such as 7d, 36h or 90m", s)
		}
	}
	return days + d, nil
}

// pruneOptions is what the prune subcommand is told besides the database.
type pruneOptions struct {
	olderThan retention
	batch     int
	dryRun    bool
}

// newPruneCommand returns the prune subcommand.
func newPruneCommand(newFS func(string) *flag.FlagSet, opts []ff.Option, stdout io.Writer) *ffcli.Command {
	var cfg Config
	var po pruneOptions
	fs := newFS("prune")
	bindDatabase(fs, &cfg)
	fs.Var(&po.olderThan, "older-than", "delete rows created longer ago than this (7d, 36h, 0s), and only those the relay has confirmed; required")
	fs.IntVar(&po.batch, "batch", defaultPruneBatch, "rows one delete statement (one short transaction) removes at most, about")
	fs.BoolVar(&po.dryRun, "dry-run", false, "count the rows prune would delete, and delete nothing")
	return &ffcli.Command{
		Name:       "prune",
		ShortUsage: "outbox-relay prune --older-than 7d [--batch 10000] [--dry-run] [flags]",
		ShortHelp:  "Delete outbox rows older than --older-than that the relay has confirmed, in small batches.",
		FlagSet:    fs,
		UsageFunc:  usage,
		Options:    opts,
		Exec: func(ctx context.Context, _ []string) error {
			if err := cfg.finish(); err != nil {
				return err
			}
			if !po.olderThan.set {
				return usageError{errors.New("--older-than is required, e.g. --older-than 7d")}
			}
			if po.batch <= 0 {
				return usageError{fmt.Errorf("--batch is %d; use a positive number of rows", po.batch)}
			}
			return prune(ctx, cfg, po, stdout)
		},
	}
}

// prune runs the prune subcommand: one pass over the table, printing
// progress and the total to stdout.
func prune(ctx context.Context, cfg Config, po pruneOptions, stdout io.Writer) error {
	conn, err := pgx.Connect(ctx, cfg.CDC.DSN)
	if err != nil {
		return cdc.ConnectError(cfg.CDC.DSN, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	h, err := loadPruneHorizon(ctx, conn, cfg.CDC.Table, cfg.CDC.Slot)
	if err != nil {
		return err
	}
	verb := "deleted"
	if po.dryRun {
		verb = "would delete"
	}
	fmt.Fprintf(stdout, "horizon of slot %s: taken %s at %s, confirmed at %s\n",
		cfg.CDC.Slot, h.Time.UTC().Format(time.RFC3339), h.LSN, h.ConfirmedLSN)
	last := time.Now()
	res, err := pruneRows(ctx, conn, pruneJob{
		table: cfg.CDC.Table, horizon: h, olderThan: po.olderThan.d, batch: po.batch, dryRun: po.dryRun,
		progress: func(p pruneProgress) {
			if time.Since(last) >= time.Second {
				last = time.Now()
				fmt.Fprintf(stdout, "%s %d rows so far (block %d of %d)\n", verb, p.rows, p.block, p.blocks)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("prune %s after %d rows: %w", cfg.CDC.Table, res.rows, err)
	}
	fmt.Fprintf(stdout, "%s %d rows of %s created before %s and confirmed\n",
		verb, res.rows, cfg.CDC.Table, res.cutoff.UTC().Format(time.RFC3339))
	return nil
}

// errNoHorizon reports that no confirmed horizon is recorded yet.
var errNoHorizon = errors.New("no confirmed horizon is recorded yet")

// loadPruneHorizon returns the confirmed horizon of slot, or an error saying
// what to do when there is none, the state table is missing or unreadable,
// or the horizon is too old to use.
func loadPruneHorizon(ctx context.Context, conn *pgx.Conn, table schema.Table, slot string) (state.Horizon, error) {
	st := table.StateTable()
	h, ok, err := state.LoadHorizon(ctx, conn, table, slot)
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "42P01":
		return h, fmt.Errorf("%w: state table %s is missing; run `outbox-relay setup`, then let `outbox-relay run` record a horizon", err, st)
	case errors.As(err, &pgErr) && pgErr.Code == "42501":
		return h, fmt.Errorf("%w; GRANT SELECT ON %s TO %s", err, st.Quoted(), pgx.Identifier{conn.Config().User}.Sanitize())
	case err != nil:
		return h, err
	case !ok:
		return h, fmt.Errorf("slot %q in %s: %w, so no row is known to be confirmed; "+
			"run `outbox-relay run` (it records one seconds after the slot confirms its position) and prune again", slot, st, errNoHorizon)
	}
	age, err := horizonAge(ctx, conn, h)
	if err != nil {
		return h, fmt.Errorf("slot %q: %w", slot, err)
	}
	if age < 0 {
		return h, fmt.Errorf("the horizon of slot %q (%s) is ahead of the server by %d transactions: it was recorded on another server (a restore or a switch-over copied the state table); delete the slot's row from %s and let `outbox-relay run` record a new one", slot, h.Time.UTC().Format(time.RFC3339), -age, st)
	}
	if age > maxHorizonAge {
		return h, fmt.Errorf("the horizon of slot %q (%s) is %d transactions old, too old to judge rows by; run `outbox-relay run` so that it records a new one", slot, h.Time.UTC().Format(time.RFC3339), age)
	}
	return h, nil
}

// horizonAge returns how many transaction IDs the server has assigned since
// h's snapshot was taken; negative when h is ahead of the server (another
// server's history).
func horizonAge(ctx context.Context, db state.RowQuerier, h state.Horizon) (int64, error) {
	var age int64
	if err := db.QueryRow(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint - pg_snapshot_xmax($1::pg_snapshot)::text::bigint`,
		h.Snapshot).Scan(&age); err != nil {
		return 0, fmt.Errorf("compare the horizon with the server: %w", err)
	}
	return age, nil
}

// pruneJob is one pass of prune over the table.
type pruneJob struct {
	table     schema.Table
	horizon   state.Horizon
	olderThan time.Duration
	batch     int
	dryRun    bool
	// progress, if set, is called after each batch.
	progress func(pruneProgress)
	// deleted, if set, is called with the rows each batch deleted.
	deleted func(n int64)
}

// pruneProgress is where a pass is.
type pruneProgress struct {
	rows          int64
	block, blocks int64
	cutoff        time.Time
}

// pruneRows deletes (or with dryRun counts) the rows of job.table created
// before now() - job.olderThan (by the server's clock) that job.horizon
// covers (state.CommittedIn). It walks the table once in physical
// order, a range of blocks per statement sized to hold about job.batch
// rows, each statement its own short transaction. A delete locks only the
// rows it deletes, which nobody else writes: inserts go on beside it.
// Blocks added after the pass began are left to the next one.
func pruneRows(ctx context.Context, conn *pgx.Conn, job pruneJob) (pruneProgress, error) {
	var p pruneProgress
	var pages, tuples float64
	err := conn.QueryRow(ctx, `
		SELECT now() - make_interval(secs => $2),
		       pg_relation_size($1::regclass) / current_setting('block_size')::bigint,
		       relpages, reltuples
		FROM pg_class WHERE oid = $1::regclass`,
		job.table.Quoted(), job.olderThan.Seconds()).Scan(&p.cutoff, &p.blocks, &pages, &tuples)
	if err != nil {
		return p, fmt.Errorf("read size of %s: %w", job.table, err)
	}
	perBlock := 50.0 // rows per block of a table never analyzed
	if pages > 0 && tuples > 0 {
		perBlock = max(1, tuples/pages)
	}
	step := max(1, int64(float64(job.batch)/perBlock))

	where := `ctid >= $1::tid AND ctid < $2::tid AND ` + quoteCreatedAt(job.table) + ` < $3 AND ` + state.CommittedIn(job.table, "$4")
	q := `DELETE FROM ` + job.table.Quoted() + ` WHERE ` + where
	if job.dryRun {
		q = `SELECT count(*) FROM ` + job.table.Quoted() + ` WHERE ` + where
	}
	for p.block = 0; p.block < p.blocks; {
		if err := ctx.Err(); err != nil {
			return p, err
		}
		end := min(p.block+step, p.blocks)
		from, to := fmt.Sprintf("(%d,0)", p.block), fmt.Sprintf("(%d,0)", end)
		var n int64
		if job.dryRun {
			err = conn.QueryRow(ctx, q, from, to, p.cutoff, job.horizon.Snapshot).Scan(&n)
		} else {
			var tag pgconn.CommandTag
			tag, err = conn.Exec(ctx, q, from, to, p.cutoff, job.horizon.Snapshot)
			n = tag.RowsAffected()
		}
		if err != nil {
			return p, fmt.Errorf("blocks %d to %d: %w", p.block, end, err)
		}
		p.rows += n
		p.block = end
		if n > 0 && job.deleted != nil && !job.dryRun {
			job.deleted(n)
		}
		if job.progress != nil {
			job.progress(p)
		}
	}
	return p, nil
}

// quoteCreatedAt is the outbox table's creation time column, which
// migration 0001 names created_at whatever the column mapping.
func quoteCreatedAt(t schema.Table) string { return t.Quoted() + `."created_at"` }
