package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
)

// TestFaultBadConfiguration starts the relay with one thing wrong at a
// time, adding to TestConfigErrors (malformed and refused DSN, refused
// brokers, invalid topic template, unknown column mapping) the faults a
// deployment meets beyond a typo: it must exit non-zero within 15
// seconds, with one message on stderr that says what to fix.
func TestFaultBadConfiguration(t *testing.T) {
	t.Parallel()
	const limit = 15 * time.Second
	e := newEnv(t)
	tests := []struct {
		name string
		// env returns the settings that make the configuration bad.
		env  func(t *testing.T) []string
		code int      // expected exit code; 0 means any non-zero
		want []string // phrases the message must hold
	}{
		{
			name: "wal_level not logical",
			env: func(t *testing.T) []string {
				c, err := pgtest.Start(t.Context(), pgtest.Options{Settings: map[string]string{"wal_level": "replica"}, Logf: t.Logf})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = c.Stop() })
				return []string{"OUTBOX_RELAY_PG_DSN=" + c.DSN("")}
			},
			want: []string{`wal_level is "replica"`, "set wal_level = logical", "restart PostgreSQL"},
		},
		{
			name: "role without REPLICATION",
			env: func(t *testing.T) []string {
				role := fmt.Sprintf("norep_%d", rand.Uint32())
				execSQL(t, e.dsn, "CREATE ROLE "+role+" LOGIN", "GRANT SELECT ON outbox TO "+role)
				t.Cleanup(func() { execSQL(t, e.dsn, "REVOKE ALL ON outbox FROM "+role, "DROP ROLE "+role) })
				u, err := url.Parse(e.dsn)
				if err != nil {
					t.Fatal(err)
				}
				u.User = url.User(role)
				return []string{"OUTBOX_RELAY_PG_DSN=" + u.String()}
			},
			want: []string{"REPLICATION attribute", "ALTER ROLE"},
		},
		{
			name: "PostgreSQL never answers",
			env: func(t *testing.T) []string {
				return []string{"OUTBOX_RELAY_PG_DSN=postgres://postgres@" + silentListener(t) + "/postgres?sslmode=disable"}
			},
			// Like the brokers' message below: what to check, not only
			// that a deadline passed.
			want: []string{"connect to PostgreSQL at", "timeout", "reachable"},
		},
		{
			name: "brokers never answer",
			env: func(t *testing.T) []string {
				return []string{"OUTBOX_RELAY_KAFKA_BROKERS=" + silentListener(t)}
			},
			want: []string{"no kafka broker answered", "check that they are running and reachable"},
		},
		{
			name: "database missing",
			env: func(t *testing.T) []string {
				u, err := url.Parse(e.dsn)
				if err != nil {
					t.Fatal(err)
				}
				u.Path = "/no_such_db"
				return []string{"OUTBOX_RELAY_PG_DSN=" + u.String()}
			},
			want: []string{`database "no_such_db" does not exist`},
		},
		{
			name: "outbox not set up",
			env: func(t *testing.T) []string {
				return []string{"OUTBOX_RELAY_PG_DSN=" + pgtest.NewDatabase(t)}
			},
			want: []string{"does not exist", "outbox-relay setup"},
		},
		{
			name: "unknown poison policy",
			env:  func(*testing.T) []string { return []string{"OUTBOX_RELAY_POISON_POLICY=skip"} },
			code: 2,
			want: []string{`poison policy "skip" is unknown`, `"dlq"`, `"halt"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sub := *e
			sub.t = t
			p := sub.start(tt.env(t)...)
			code := p.waitExit(t, limit, "start; it should refuse this configuration at start-up")
			took := time.Since(p.started)
			var messages []string
			for line := range strings.SplitSeq(p.logText(), "\n") {
				if strings.HasPrefix(line, "outbox-relay:") {
					messages = append(messages, line)
				}
			}
			t.Logf("exit %d after %s: %s", code, ms(took), strings.Join(messages, "\n"))
			if code == 0 || (tt.code != 0 && code != tt.code) {
				want := "non-zero"
				if tt.code != 0 {
					want = fmt.Sprint(tt.code)
				}
				t.Errorf("exit code %d, want %s", code, want)
			}
			if len(messages) != 1 {
				t.Errorf("stderr holds %d outbox-relay: messages, want one\n%s", len(messages), p.logText())
				return
			}
			for _, w := range tt.want {
				if !strings.Contains(messages[0], w) {
					t.Errorf("message lacks %q: %s", w, messages[0])
				}
			}
			if text := p.logText(); strings.Contains(text, "panic:") || strings.Contains(text, "goroutine ") {
				t.Errorf("stderr holds a panic or goroutine dump\n%s", text)
			}
		})
	}
}

// execSQL runs statements on the database at dsn.
func execSQL(t *testing.T, dsn string, statements ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, s := range statements {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// silentListener returns the address of a listener that accepts
// connections and never answers, as a host behind a firewall that drops
// packets would leave a client waiting.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestRefusedPrivilegesNameTheFix runs setup and replay as roles that lack
// what each step needs: every refusal must exit non-zero naming the
// privilege, role attribute or grant that is missing, not only
// PostgreSQL's "permission denied".
func TestRefusedPrivilegesNameTheFix(t *testing.T) {
	e := newEnv(t)
	dsnAs := func(attrs string) string {
		t.Helper()
		role := fmt.Sprintf("weak_%d", rand.Uint32())
		execSQL(t, e.dsn, "CREATE ROLE "+role+" LOGIN "+attrs)
		t.Cleanup(func() { execSQL(t, e.dsn, "DROP ROLE "+role) })
		u, err := url.Parse(e.dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.User(role)
		return u.String()
	}
	plain, replication := dsnAs(""), dsnAs("REPLICATION")
	for _, tt := range []struct {
		name string
		args []string
		env  []string
		want []string
	}{
		{"setup: a new publication, not the table's owner", []string{"setup"},
			[]string{"OUTBOX_RELAY_PG_DSN=" + plain, "OUTBOX_RELAY_PUBLICATION=weak_pub"},
			[]string{`create publication "weak_pub"`, "run setup as the table's owner or an admin"}},
		{"setup: a new slot, without REPLICATION", []string{"setup"},
			[]string{"OUTBOX_RELAY_PG_DSN=" + plain, "OUTBOX_RELAY_SLOT=weak_slot"},
			[]string{`create replication slot "weak_slot"`, "REPLICATION attribute (ALTER ROLE name REPLICATION)"}},
		{"replay: no SELECT on the table", []string{"replay", "--since", "2026-01-01T00:00:00Z"},
			[]string{"OUTBOX_RELAY_PG_DSN=" + replication},
			[]string{"count rows of public.outbox", `GRANT SELECT ON "public"."outbox" TO "weak_`, `GRANT USAGE ON SCHEMA "public" TO "weak_`}},
		{"replay from an event ID: no SELECT on the table", []string{"replay", "--since", "0b7f6f7e-54b5-4e0c-9a3c-0c3bb1a3f2d1"},
			[]string{"OUTBOX_RELAY_PG_DSN=" + replication},
			[]string{"permission denied for table outbox", `GRANT SELECT ON "public"."outbox" TO "weak_`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := e.command(t.Context(), tt.args...)
			cmd.Env = append(cmd.Env, tt.env...)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("outbox-relay %s succeeded, want it refused\n%s", strings.Join(tt.args, " "), out)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
