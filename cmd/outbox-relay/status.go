package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/cdc"
)

// statusError reports a slot the relay cannot use; status exits 3 with it.
type statusError struct{ err error }

func (e statusError) Error() string { return e.err.Error() }
func (e statusError) Unwrap() error { return e.err }

// slotStatus is what status prints.
type slotStatus struct {
	Slot           string   `json:"slot"`
	Plugin         string   `json:"plugin"`
	Active         bool     `json:"active"`
	ActivePID      int32    `json:"active_pid,omitempty"`
	ConfirmedFlush string   `json:"confirmed_flush_lsn"`
	RestartLSN     string   `json:"restart_lsn"`
	CurrentLSN     string   `json:"current_wal_lsn"`
	WALStatus      string   `json:"wal_status"`
	LagBytes       int64    `json:"lag_bytes"`
	RetainedBytes  int64    `json:"retained_wal_bytes"`
	Publication    string   `json:"publication"`
	Tables         []string `json:"publication_tables"`
}

// status prints the slot's position and lag.
func status(ctx context.Context, cfg Config, asJSON bool, stdout io.Writer) error {
	conn, err := pgx.Connect(ctx, cfg.CDC.DSN)
	if err != nil {
		return cdc.ConnectError(cfg.CDC.DSN, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	s, err := cdc.ReadSlot(ctx, conn, cfg.CDC.Slot)
	if errors.Is(err, cdc.ErrNoSlot) {
		// Setup cannot make the slot before the server, table and
		// publication are right: say first what it needs first.
		cerr := cdc.CheckServer(ctx, conn, cfg.CDC.Table, cfg.CDC.Publication)
		for _, first := range []error{cdc.ErrServerVersion, cdc.ErrWALLevel, cdc.ErrNoTable, cdc.ErrNoPublication, cdc.ErrNotPublished, cdc.ErrNoInserts} {
			if errors.Is(cerr, first) {
				return statusError{fmt.Errorf("%w; and %w", cerr, err)}
			}
		}
		return statusError{err}
	}
	if err != nil {
		return err
	}
	rows, err := conn.Query(ctx, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`, cfg.CDC.Publication)
	if err != nil {
		return fmt.Errorf("read publication %q: %w", cfg.CDC.Publication, err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("read publication %q: %w", cfg.CDC.Publication, err)
	}
	st := slotStatus{
		Publication: cfg.CDC.Publication, Tables: tables,
		Slot: s.Name, Plugin: s.Plugin, Active: s.Active, ActivePID: s.ActivePID,
		ConfirmedFlush: s.ConfirmedFlush.String(), RestartLSN: s.RestartLSN.String(), CurrentLSN: s.CurrentLSN.String(),
		WALStatus: s.WALStatus, LagBytes: s.LagBytes(), RetainedBytes: s.RetainedBytes(),
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			return fmt.Errorf("write status: %w", err)
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "slot\t%s\n", st.Slot)
		fmt.Fprintf(tw, "plugin\t%s\n", st.Plugin)
		fmt.Fprintf(tw, "active\t%t\n", st.Active)
		if st.Active {
			fmt.Fprintf(tw, "active pid\t%d\n", st.ActivePID)
		}
		fmt.Fprintf(tw, "confirmed flush lsn\t%s\n", st.ConfirmedFlush)
		fmt.Fprintf(tw, "restart lsn\t%s\n", st.RestartLSN)
		fmt.Fprintf(tw, "current wal lsn\t%s\n", st.CurrentLSN)
		fmt.Fprintf(tw, "wal status\t%s\n", st.WALStatus)
		fmt.Fprintf(tw, "lag bytes\t%d\n", st.LagBytes)
		fmt.Fprintf(tw, "retained wal bytes\t%d\n", st.RetainedBytes)
		fmt.Fprintf(tw, "publication\t%s\n", st.Publication)
		fmt.Fprintf(tw, "publication tables\t%s\n", strings.Join(st.Tables, ", "))
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("write status: %w", err)
		}
	}
	if err := s.Usable(); err != nil {
		return statusError{err}
	}
	return nil
}
