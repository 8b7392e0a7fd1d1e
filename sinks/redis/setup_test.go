package redis_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/outbox-relay/outbox-relay/sinks/redis"
	"github.com/outbox-relay/outbox-relay/sinks/redis/redistest"
)

// TestSetupDurability checks what Setup logs of the server's persistence
// settings: a warning naming what can be lost unless every acknowledged
// entry is synced to disk.
func TestSetupDurability(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		warn string // "" means no warning, and the settings at info level
	}{
		{name: "appendfsync always"},
		{name: "appendfsync everysec", args: []string{"--appendfsync", "everysec"}, warn: "appendfsync everysec"},
		{name: "appendfsync no", args: []string{"--appendfsync", "no"}, warn: "(appendfsync no)"},
		{name: "snapshots only", args: []string{"--appendonly", "no", "--save", "3600 1"}, warn: "since its last snapshot"},
		{name: "nothing on disk", args: []string{"--appendonly", "no"}, warn: "saves no snapshots"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.StartWith(t, redistest.Options{Args: tc.args})
			var l logs
			s := newSink(t, srv, redis.Config{}, l.logger(), nil)
			if err := s.Setup(testContext(t)); err != nil {
				t.Fatalf("Setup: %v", err)
			}
			warnings := l.find(slog.LevelWarn, "")
			if tc.warn == "" {
				if len(warnings) > 0 {
					t.Errorf("Setup warned %q with appendonly yes and appendfsync always", warnings[0].msg)
				}
				infos := l.find(slog.LevelInfo, "connected to Redis")
				if len(infos) != 1 || infos[0].attrs["appendfsync"] != "always" || infos[0].attrs["component"] != redis.Name {
					t.Errorf("Setup logged %+v at info level, want the settings once", infos)
				}
				return
			}
			if len(warnings) != 1 || !strings.Contains(warnings[0].msg, tc.warn) || !strings.Contains(warnings[0].msg, "set appendonly yes and appendfsync always") &&
				!strings.Contains(warnings[0].msg, "set appendfsync always") {
				t.Fatalf("Setup warned %+v, want one warning holding %q and what to set", warnings, tc.warn)
			}
			if w := warnings[0]; w.attrs["url"] != srv.URL || w.attrs["appendonly"] == "" || w.attrs["component"] != redis.Name {
				t.Errorf("warning attributes %v, want url %s, the settings and component=redis", w.attrs, srv.URL)
			}
		})
	}
}

// TestDurabilityOnFirstConnection checks that the sink reads the settings
// when it first connects, without Setup, and that Setup then does not log
// them again.
func TestDurabilityOnFirstConnection(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{Args: []string{"--appendfsync", "everysec"}})
	var l logs
	s := newSink(t, srv, redis.Config{}, l.logger(), nil)
	d := newDones()
	d.publish(s, events("First", 10, 2))
	d.wait(t)
	if n := len(l.find(slog.LevelWarn, "appendfsync everysec")); n != 1 {
		t.Fatalf("%d warnings after the first connection, want 1", n)
	}
	if err := s.Setup(testContext(t)); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if n := len(l.find(slog.LevelWarn, "appendfsync everysec")); n != 1 {
		t.Errorf("%d warnings after Setup, want still 1", n)
	}

	// A change is reported again.
	configSet(t, srv.Client(t), "appendfsync", "no")
	if err := s.Setup(testContext(t)); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if n := len(l.find(slog.LevelWarn, "(appendfsync no)")); n != 1 {
		t.Errorf("%d warnings after appendfsync changed, want 1", n)
	}
}

// TestACL checks that a user with only the permissions the package doc
// lists can publish and dead-letter, and that Setup, refused CONFIG GET,
// says so at debug level and succeeds.
func TestACL(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	if err := c.Do(testContext(t), "ACL", "SETUSER", "relay", "on", ">relay-pw", "~outbox.*", "~outbox-relay-dlq", "+xadd", "+ping").Err(); err != nil {
		t.Fatal(err)
	}
	var l logs
	s := newSink(t, srv, redis.Config{Username: "relay", Password: "relay-pw"}, l.logger(), nil)
	if err := s.Setup(testContext(t)); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if r := l.find(slog.LevelDebug, "cannot read the Redis persistence settings"); len(r) != 1 || !strings.Contains(r[0].attrs["err"], "NOPERM") {
		t.Errorf("Setup logged %+v at debug level, want the refused CONFIG GET once", r)
	}
	if w := l.find(slog.LevelWarn, ""); len(w) > 0 {
		t.Errorf("Setup warned %+v", w)
	}
	evs := events("Limited", 100, 5)
	d, dl := newDones(), newDones()
	d.publish(s, evs)
	dl.expect(1)
	s.DeadLetter(testContext(t), evs[0], "rejected", errTest, 1, dl.done(evs[0].ID))
	d.wait(t)
	dl.wait(t)
	if f := append(d.failures(), dl.failures()...); len(f) > 0 {
		t.Fatal(f)
	}
	checkStored(t, srv, "outbox.*", evs)
}

// TestCluster checks that Setup refuses a server in cluster mode.
func TestCluster(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{Args: []string{"--cluster-enabled", "yes"}})
	var l logs
	s := newSink(t, srv, redis.Config{}, l.logger(), nil)
	err := s.Setup(testContext(t))
	if err == nil || !strings.Contains(err.Error(), "cluster mode") || !strings.Contains(err.Error(), "standalone server") {
		t.Fatalf("Setup = %v, want an error saying cluster mode is not supported", err)
	}
	if r := l.find(slog.LevelError, "cluster mode"); len(r) != 1 {
		t.Errorf("logged %+v at error level, want cluster mode once", r)
	}
}
