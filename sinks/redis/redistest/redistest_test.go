package redistest_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/redis/redistest"
	"github.com/outbox-relay/outbox-relay/sinks/sinktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func xadd(t *testing.T, c *goredis.Client, key string, values ...string) string {
	t.Helper()
	id, err := c.XAdd(testContext(t), &goredis.XAddArgs{Stream: key, Values: values}).Result()
	if err != nil {
		t.Fatalf("XADD %s: %v", key, err)
	}
	return id
}

// TestLifecycle checks that an entry the server acknowledged survives a
// clean stop and a kill, and that the server answers on the same address
// after each start.
func TestLifecycle(t *testing.T) {
	s := redistest.Start(t)
	c := s.Client(t)
	id1 := xadd(t, c, "outbox.a", "k", "1")

	s.Stop(t)
	refused(t, s.Addr)
	s.Start(t)
	id2 := xadd(t, c, "outbox.a", "k", "2")

	s.Kill(t)
	refused(t, s.Addr)
	s.Start(t)

	want := []redistest.Entry{
		{ID: id1, Fields: []redistest.Field{{"k", "1"}}},
		{ID: id2, Fields: []redistest.Field{{"k", "2"}}},
	}
	if diff := cmp.Diff(want, s.Entries(t, "outbox.a")); diff != "" {
		t.Errorf("entries after a stop and a kill (-want +got):\n%s", diff)
	}
	if got := s.Entries(t, "nothing"); len(got) != 0 {
		t.Errorf("Entries(nothing) = %v, want none", got)
	}
}

// refused fails t unless a connection to addr is refused.
func refused(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err == nil {
		conn.Close()
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect to %s: %v, want connection refused", addr, err)
	}
}

func TestRead(t *testing.T) {
	s := redistest.Start(t)
	c := s.Client(t)
	ctx := testContext(t)
	xadd(t, c, "outbox.b", "id", "e2", "event_type", "T", "aggregate_type", "b", "aggregate_id", "9",
		"position", "000000000000000200000000", "payload", "{}")
	xadd(t, c, "outbox.a", "id", "e1", "event_type", "T", "aggregate_type", "a", "aggregate_id", "7",
		"position", "000000000000000100000001", "replayed", "true", "replay_started", "2026-01-02T03:04:05.5Z",
		"headers", `{"trace": "x\"y", "id": "forged", "n": 1.5, "obj": {"a": [1, 2]}, "nil": null}`,
		"payload", `{"v":1}`)
	if err := c.Set(ctx, "outbox.string", "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	xadd(t, c, "other", "id", "e3", "payload", "x")
	xadd(t, c, redistest.DefaultDeadLetterStream, "id", "e4", "event_type", "T", "aggregate_type", "a", "aggregate_id", "7",
		"position", "000000000000000300000000", "dlq_reason", "size", "dlq_payload_omitted", "true")

	h := func(k, v string) delivery.Header { return delivery.Header{Key: k, Value: []byte(v)} }
	want := []sinktest.Message{
		{Destination: "outbox.a", Key: "7", Payload: []byte(`{"v":1}`), Headers: []delivery.Header{
			h("id", "e1"), h("event_type", "T"), h("aggregate_type", "a"), h("position", "000000000000000100000001"),
			h("replayed", "true"), h("replay_started", "2026-01-02T03:04:05.5Z"),
			h("trace", `x"y`), h("n", "1.5"), h("obj", `{"a": [1, 2]}`), h("nil", ""),
		}},
		{Destination: "outbox.b", Key: "9", Payload: []byte(`{}`), Headers: []delivery.Header{
			h("id", "e2"), h("event_type", "T"), h("aggregate_type", "b"), h("position", "000000000000000200000000"),
		}},
	}
	if diff := cmp.Diff(want, s.Read(t, "outbox.*")); diff != "" {
		t.Errorf("Read(outbox.*) (-want +got):\n%s", diff)
	}
	wantDLQ := []sinktest.Message{
		{Destination: redistest.DefaultDeadLetterStream, Key: "7", Headers: []delivery.Header{
			h("id", "e4"), h("event_type", "T"), h("aggregate_type", "a"), h("position", "000000000000000300000000"),
			h("dlq_reason", "size"), h("dlq_payload_omitted", "true"),
		}},
	}
	if diff := cmp.Diff(wantDLQ, s.ReadDeadLetters(t, "")); diff != "" {
		t.Errorf("ReadDeadLetters (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"outbox.a", "outbox.b"}, s.Keys(t, "outbox.*")); diff != "" {
		t.Errorf("Keys(outbox.*) (-want +got):\n%s", diff)
	}
}

// TestReadPages checks that Read returns streams longer than one XRANGE
// page whole and in order.
func TestReadPages(t *testing.T) {
	s := redistest.Start(t)
	c := s.Client(t)
	ctx := testContext(t)
	const n = 25_000
	p := c.Pipeline()
	for i := range n {
		p.XAdd(ctx, &goredis.XAddArgs{Stream: "outbox.long", Values: []string{"aggregate_id", "k", "payload", string(rune('a' + i%26))}})
	}
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	got := s.Read(t, "outbox.*")
	if len(got) != n {
		t.Fatalf("Read returned %d messages, want %d", len(got), n)
	}
	for i, m := range got {
		if want := string(rune('a' + i%26)); string(m.Payload) != want {
			t.Fatalf("message %d has payload %q, want %q", i, m.Payload, want)
		}
	}
}

func TestMessageHeaders(t *testing.T) {
	for _, tc := range []struct {
		name, headers string
		want          []delivery.Header
		wantErr       bool
	}{
		{name: "null", headers: "null"},
		{name: "empty object", headers: "{}"},
		{name: "escaped name", headers: `{"a\u0062": "c"}`, want: []delivery.Header{{Key: "ab", Value: []byte("c")}}},
		{name: "duplicate names kept", headers: `{"a": "1", "a": "2"}`, want: []delivery.Header{{Key: "a", Value: []byte("1")}, {Key: "a", Value: []byte("2")}}},
		{name: "array", headers: "[1]", wantErr: true},
		{name: "string", headers: `"x"`, wantErr: true},
		{name: "invalid", headers: "{", wantErr: true},
		{name: "trailing text", headers: "{} {}", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := redistest.Message("s", redistest.Entry{ID: "1-0", Fields: []redistest.Field{{"headers", tc.headers}}})
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Message with headers %s = %+v, want an error", tc.headers, m)
				}
				return
			}
			if err != nil {
				t.Fatalf("Message with headers %s: %v", tc.headers, err)
			}
			if diff := cmp.Diff(tc.want, m.Headers); diff != "" {
				t.Errorf("headers of %s (-want +got):\n%s", tc.headers, diff)
			}
		})
	}
}

func TestOptions(t *testing.T) {
	t.Run("password", func(t *testing.T) {
		s := redistest.StartWith(t, redistest.Options{Password: "s3cret"})
		if !strings.Contains(s.URL, ":s3cret@") {
			t.Errorf("URL %s does not hold the password", s.URL)
		}
		if err := s.Client(t).Ping(testContext(t)).Err(); err != nil {
			t.Errorf("PING with the password: %v", err)
		}
		anon := goredis.NewClient(&goredis.Options{Addr: s.Addr, Protocol: 2, DisableIdentity: true})
		defer anon.Close()
		if err := anon.Ping(testContext(t)).Err(); !goredis.IsAuthError(err) {
			t.Errorf("PING without the password: %v, want NOAUTH", err)
		}
	})
	t.Run("tls with client certificates", func(t *testing.T) {
		s := redistest.StartWith(t, redistest.Options{TLS: true, ClientCerts: true})
		if !strings.HasPrefix(s.URL, "rediss://") {
			t.Errorf("URL %s is not rediss://", s.URL)
		}
		c := s.Client(t)
		xadd(t, c, "outbox.t", "k", "v")
		s.Kill(t)
		s.Start(t)
		if got := s.Entries(t, "outbox.t"); len(got) != 1 {
			t.Errorf("entries after a restart over TLS = %v, want one", got)
		}
		plain := goredis.NewClient(&goredis.Options{Addr: s.Addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1})
		defer plain.Close()
		if err := plain.Ping(testContext(t)).Err(); err == nil {
			t.Error("PING without TLS succeeded")
		}
	})
	t.Run("args", func(t *testing.T) {
		s := redistest.StartWith(t, redistest.Options{Args: []string{"--appendfsync", "everysec"}})
		got, err := s.Client(t).ConfigGet(testContext(t), "appendfsync").Result()
		if err != nil {
			t.Fatal(err)
		}
		if got["appendfsync"] != "everysec" {
			t.Errorf("appendfsync = %q, want everysec", got["appendfsync"])
		}
	})
}

// helperEnv makes the test binary run TestOrphan's helper: start a server,
// print its address, and wait to be killed.
const helperEnv = "REDISTEST_ORPHAN_HELPER"

// TestOrphan kills a test binary that started a server with SIGKILL, so
// that no cleanup runs, and checks that the server dies with it.
func TestOrphan(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		s := redistest.Start(t)
		os.Stdout.WriteString(s.Addr + "\n")
		select {}
	}
	if testing.Short() {
		t.Skip("needs redis-server; skipped by -short")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestOrphan$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	var addr string
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "127.0.0.1:") {
			addr = line
			break
		}
	}
	if addr == "" {
		t.Fatalf("the helper printed no address: %v", sc.Err())
	}
	if conn, err := net.Dial("tcp", addr); err != nil {
		t.Fatalf("the helper's server does not listen on %s: %v", addr, err)
	} else {
		conn.Close()
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.Dial("tcp", addr)
		if errors.Is(err, syscall.ECONNREFUSED) {
			return
		}
		if err == nil {
			conn.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server on %s still answers 10s after its test binary was killed", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNewClose checks that a server from New answers until Close, which
// kills it and removes its directory, and that a second Close does nothing.
func TestNewClose(t *testing.T) {
	if testing.Short() {
		t.Skip("needs redis-server; skipped by -short")
	}
	s, err := redistest.New(redistest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pid := s.PID()
	if pid <= 0 {
		s.Close()
		t.Fatalf("PID of a running server = %d", pid)
	}
	if err := s.Client(t).Ping(testContext(t)).Err(); err != nil {
		s.Close()
		t.Fatalf("PING: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	refused(t, s.Addr)
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d after Close: kill -0 gives %v, want no such process", pid, err)
	}
	if _, err := os.Stat(s.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory %s after Close: %v, want it removed", s.Dir, err)
	}
	if got := s.PID(); got != 0 {
		t.Errorf("PID after Close = %d, want 0", got)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestNewWithoutProgram checks that New's error, without redis-server,
// wraps exec.ErrNotFound and says what to install.
func TestNewWithoutProgram(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv(redistest.EnvServer, "")
	s, err := redistest.New(redistest.Options{})
	if err == nil {
		s.Close()
		t.Fatal("New without redis-server on PATH succeeded")
	}
	if !errors.Is(err, exec.ErrNotFound) || !strings.Contains(err.Error(), "apt-get install redis-server") {
		t.Errorf("New without redis-server: %v, want exec.ErrNotFound and how to install it", err)
	}
}

// BenchmarkStart measures Start: a new directory, a server started, and
// the first PONG.
func BenchmarkStart(b *testing.B) {
	for b.Loop() {
		s := redistest.Start(b)
		s.Kill(b)
	}
}
