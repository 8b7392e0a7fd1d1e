package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/schema"
)

// result is how a command ended.
type result struct {
	code           int
	stdout, stderr string
}

// runCmd runs cmd, failing t if it does not end within timeout.
func runCmd(t *testing.T, cmd *exec.Cmd, timeout time.Duration) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s still running after %s\nstdout:\n%s\nstderr:\n%s", strings.Join(cmd.Args, " "), timeout, stdout.String(), stderr.String())
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

// TestSetupIsIdempotentAndDryRun checks the subcommands besides run: setup
// (again, and --dry-run), status (table and JSON, with and without a
// relay, and for a missing slot) and version.
func TestSetupIsIdempotentAndDryRun(t *testing.T) {
	e := newEnv(t) // has run setup once
	ctx := t.Context()
	for i := range 2 {
		r := runCmd(t, e.command(ctx, "setup"), 30*time.Second)
		if r.code != 0 {
			t.Fatalf("setup #%d: exit %d\n%s%s", i+2, r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stdout, "ready") || !strings.Contains(r.stdout, e.slot) {
			t.Errorf("setup #%d printed %q, want it to say ready and name the slot %q", i+2, r.stdout, e.slot)
		}
	}

	t.Run("dry-run", func(t *testing.T) {
		fresh := *e
		fresh.dsn = pgtest.NewDatabase(t) // never set up
		r := runCmd(t, fresh.command(ctx, "setup", "--dry-run"), 30*time.Second)
		if r.code != 0 {
			t.Fatalf("setup --dry-run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		for _, want := range []string{"CREATE TABLE", "CREATE PUBLICATION", "pg_create_logical_replication_slot"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("setup --dry-run printed no %s:\n%s", want, r.stdout)
			}
		}
		conn, err := pgx.Connect(ctx, fresh.dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var tables, pubs, slots int
		err = conn.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM pg_tables WHERE schemaname = 'public'),
			(SELECT count(*) FROM pg_publication),
			(SELECT count(*) FROM pg_replication_slots WHERE database = current_database())`).Scan(&tables, &pubs, &slots)
		if err != nil {
			t.Fatal(err)
		}
		if tables+pubs+slots != 0 {
			t.Errorf("after setup --dry-run the database holds %d tables, %d publications and %d slots, want none", tables, pubs, slots)
		}

		// The SQL is for review: it needs no database.
		cmd := fresh.command(ctx, "setup", "--dry-run")
		cmd.Env = append(cmd.Env, "OUTBOX_RELAY_PG_DSN=")
		r2 := runCmd(t, cmd, 30*time.Second)
		if r2.code != 0 || r2.stdout != r.stdout {
			t.Errorf("setup --dry-run without a DSN: exit %d, output %q; want 0 and the same SQL\n%s", r2.code, r2.stdout, r2.stderr)
		}
	})

	t.Run("status", func(t *testing.T) {
		r := runCmd(t, e.command(ctx, "status"), 30*time.Second)
		if r.code != 0 || !strings.Contains(r.stdout, e.slot) {
			t.Errorf("status: exit %d, output %q; want 0 and the slot %q\n%s", r.code, r.stdout, e.slot, r.stderr)
		}
		st := statusJSON(t, e)
		if st.Slot != e.slot || st.LagBytes < 0 || st.Active {
			t.Errorf("status --json = %+v; want slot %q, lag_bytes >= 0, active false", st, e.slot)
		}

		p := e.start()
		p.waitStreaming(time.Minute)
		if st := statusJSON(t, e); !st.Active {
			t.Errorf("status --json with a relay streaming = %+v, want active true", st)
		}
		if code := p.term(40 * time.Second); code != 0 {
			t.Errorf("exit code after SIGTERM = %d, want 0\n%s", code, p.logText())
		}
	})

	t.Run("missing slot", func(t *testing.T) {
		missing := *e
		missing.slot = "no_such_slot"
		for _, args := range [][]string{{"status"}, {"status", "--json"}} {
			r := runCmd(t, missing.command(ctx, args...), 30*time.Second)
			if r.code != 3 || !strings.Contains(r.stderr, `slot "no_such_slot"`) || !strings.Contains(r.stderr, "outbox-relay setup") {
				t.Errorf("%s with a missing slot: exit %d, stderr %q; want 3 and a message naming the slot and `outbox-relay setup`",
					strings.Join(args, " "), r.code, r.stderr)
			}
		}
	})

	t.Run("missing slot and publication", func(t *testing.T) {
		missing := *e
		missing.slot = "no_such_slot"
		cmd := missing.command(ctx, "status")
		cmd.Env = append(cmd.Env, "OUTBOX_RELAY_PUBLICATION=no_such_pub")
		r := runCmd(t, cmd, 30*time.Second)
		if r.code != 3 || !strings.Contains(r.stderr, `publication "no_such_pub"`) || !strings.Contains(r.stderr, `slot "no_such_slot"`) || !strings.Contains(r.stderr, "outbox-relay setup") {
			t.Errorf("status with neither slot nor publication: exit %d, stderr %q; want 3 and the publication named before the slot, with `outbox-relay setup`", r.code, r.stderr)
		}
	})

	t.Run("version", func(t *testing.T) {
		r := runCmd(t, e.command(ctx, "version"), 30*time.Second)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "outbox-relay ") {
			t.Errorf("version: exit %d, output %q; want 0 and outbox-relay <version>", r.code, r.stdout)
		}
	})
}

// slotStatus is the part of `status --json` the tests read.
type slotStatus struct {
	Slot     string `json:"slot"`
	Plugin   string `json:"plugin"`
	Active   bool   `json:"active"`
	LagBytes int64  `json:"lag_bytes"`
}

func statusJSON(t *testing.T, e *env) slotStatus {
	t.Helper()
	r := runCmd(t, e.command(t.Context(), "status", "--json"), 30*time.Second)
	if r.code != 0 {
		t.Fatalf("status --json: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var st slotStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json printed %q: %v", r.stdout, err)
	}
	if st.Plugin != "pgoutput" {
		t.Errorf("status --json plugin = %q, want pgoutput", st.Plugin)
	}
	return st
}

// TestConfigErrors starts the relay with one thing wrong at a time: it must
// exit non-zero within 20 seconds, saying what is wrong and what to do.
func TestConfigErrors(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		env  []string
		code int      // expected exit code; 0 means any non-zero
		want []string // phrases stderr must hold
		hide string   // text stderr must not hold
	}{
		{
			name: "malformed DSN",
			env:  []string{"OUTBOX_RELAY_PG_DSN=postgres://u:s3cret@127.0.0.1:notaport/db"},
			code: 2,
			want: []string{"PostgreSQL DSN", "malformed", "invalid port"},
			hide: "s3cret",
		},
		{
			name: "unreachable DSN",
			env:  []string{"OUTBOX_RELAY_PG_DSN=postgres://postgres:s3cret@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=5"},
			want: []string{"connect to PostgreSQL at", "127.0.0.1:1", "connection refused"},
			hide: "s3cret",
		},
		{
			name: "no brokers reachable",
			env:  []string{"OUTBOX_RELAY_KAFKA_BROKERS=" + freeAddr(t)},
			want: []string{"no kafka broker answered", "check that they are running and reachable"},
		},
		{
			name: "invalid topic template",
			env:  []string{"OUTBOX_RELAY_TOPIC=outbox.{nope}"},
			code: 2,
			want: []string{`unknown placeholder "{nope}"`, "{aggregate_type} and {event_type}"},
		},
		{
			name: "unknown column mapping",
			env:  []string{"OUTBOX_RELAY_COLUMN_AGGREGATE_ID=nope"},
			want: []string{"has no column nope (for aggregate_id)", "set the column mapping to match the table"},
		},
		{
			name: "publication without inserts",
			env:  []string{"OUTBOX_RELAY_PUBLICATION=no_inserts"},
			want: []string{`publication "no_inserts": cdc: the publication does not publish inserts`, `ALTER PUBLICATION "no_inserts" SET (publish = 'insert')`},
		},
	}
	execSQL(t, e.dsn, `CREATE PUBLICATION no_inserts FOR TABLE outbox WITH (publish = 'update, delete')`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			p := e.start(tt.env...)
			select {
			case <-p.done:
			case <-time.After(20 * time.Second):
				t.Errorf("relay still running 20s after start; it should have refused this configuration at start-up\n%s", p.logText())
				// Show what it says once a row arrives.
				conn, err := pgx.Connect(t.Context(), e.dsn)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close(context.Background())
				if err := schema.Insert(t.Context(), conn, schema.Message{AggregateType: "order", AggregateID: "1", EventType: "created", Payload: []byte(`{}`)}); err != nil {
					t.Fatal(err)
				}
				written := time.Now()
				select {
				case <-p.done:
					t.Logf("relay exited %s after one row was written", time.Since(written).Round(time.Millisecond))
				case <-time.After(20 * time.Second):
					t.Fatalf("relay still running 20s after a row was written\n%s", p.logText())
				}
			}
			code := p.cmd.ProcessState.ExitCode()
			stderr := p.logText()
			t.Logf("exit %d after %s; stderr:\n%s", code, time.Since(start).Round(time.Millisecond), stderr)
			if code == 0 || (tt.code != 0 && code != tt.code) {
				want := "non-zero"
				if tt.code != 0 {
					want = fmt.Sprint(tt.code)
				}
				t.Errorf("exit code %d, want %s", code, want)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q", w)
				}
			}
			if tt.hide != "" && strings.Contains(stderr, tt.hide) {
				t.Errorf("stderr shows the password %q", tt.hide)
			}
		})
	}
}
