package rabbitmqtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/sinktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// publish publishes a persistent message to exchange with key and waits
// for the node's confirmation.
func publish(t *testing.T, conn *amqp.Connection, exchange, key string, headers amqp.Table, body string) {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := ch.PublishWithDeferredConfirm(exchange, key, true, false, amqp.Publishing{
		Headers: headers, DeliveryMode: amqp.Persistent, Body: []byte(body),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ok, err := dc.WaitContext(ctx); err != nil || !ok {
		t.Fatalf("publish to %s/%s: acked %v, %v", exchange, key, ok, err)
	}
}

// processes returns the node's and epmd's process IDs and those of every
// process the node started.
func processes(s *Server) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var pids []int
	for _, p := range []*process{s.node, s.epmd} {
		if p != nil {
			pids = append(pids, p.cmd.Process.Pid)
			pids = append(pids, descendants(p.cmd.Process.Pid)...)
		}
	}
	return pids
}

// alive returns those of pids that still run (zombies do not).
func alive(pids []int) []int {
	var out []int
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) > 0 && f[0] != "Z" {
			out = append(out, pid)
		}
	}
	return out
}

// TestServer checks a node's life: what a durable queue holds survives
// Stop and Start, and Kill and Start; Read returns everything read so far,
// in order, headers in the relay's order; TLS works with the node's CA;
// and when the test ends, no process of the node is left.
func TestServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts RabbitMQ; skipped by -short")
	}
	var pids []int
	t.Run("life", func(t *testing.T) {
		s := StartWith(t, Options{TLS: true})
		defer func() { pids = processes(s) }()
		testLife(t, s)
	})
	if len(pids) < 3 {
		t.Errorf("processes %v: want at least the node, its erl_child_setup and epmd", pids)
	}
	if left := alive(pids); len(left) > 0 {
		t.Errorf("processes %v still run after the test ended", left)
	}
}

// TestNewClose checks that Close of a node from New leaves no process and
// no directory.
func TestNewClose(t *testing.T) {
	if testing.Short() {
		t.Skip("starts RabbitMQ; skipped by -short")
	}
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	pids := processes(s)
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	if left := alive(pids); len(left) > 0 {
		t.Errorf("processes %v still run after Close", left)
	}
	if _, err := os.Stat(s.dir); !os.IsNotExist(err) {
		t.Errorf("directory %s still there after Close: %v", s.dir, err)
	}
}

// testLife is TestServer's part with a running node.
func testLife(t *testing.T, s *Server) {
	conn := s.Dial(t)
	s.Bind(t, "amq.topic", "reader")
	headers := amqp.Table{
		"zeta": "last", delivery.HeaderAggregateID: "a-1", "alpha": "first",
		delivery.HeaderPosition: "0000000001000000000000000", delivery.HeaderID: "e1",
		delivery.HeaderEventType: "created", delivery.HeaderAggregateType: "order",
	}
	publish(t, conn, "amq.topic", "order.created", headers, `{"n":1}`)
	want := []sinktest.Message{{
		Destination: "amq.topic/order.created",
		Key:         "a-1",
		Headers: []delivery.Header{
			{Key: "id", Value: []byte("e1")}, {Key: "event_type", Value: []byte("created")},
			{Key: "aggregate_type", Value: []byte("order")}, {Key: "position", Value: []byte("0000000001000000000000000")},
			{Key: "alpha", Value: []byte("first")}, {Key: "zeta", Value: []byte("last")},
		},
		Payload: []byte(`{"n":1}`),
	}}
	if diff := cmp.Diff(want, s.Read(t, "reader")); diff != "" {
		t.Fatalf("Read (-want +got):\n%s", diff)
	}

	for _, tt := range []struct {
		name string
		stop func(testing.TB)
	}{
		{"Stop", s.Stop},
		{"Kill", s.Kill},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := len(want)
			publish(t, s.Dial(t), "amq.topic", "order.updated", amqp.Table{delivery.HeaderAggregateID: "a-1"}, strconv.Itoa(n))
			tt.stop(t)
			if s.Running() {
				t.Fatal("Running after " + tt.name)
			}
			if _, err := dial(s.URL, time.Second); err == nil {
				t.Fatalf("connected after %s", tt.name)
			}
			s.Start(t)
			want = append(want, sinktest.Message{Destination: "amq.topic/order.updated", Key: "a-1", Payload: []byte(strconv.Itoa(n))})
			if diff := cmp.Diff(want, s.Read(t, "reader")); diff != "" {
				t.Errorf("Read after %s and Start (-want +got):\n%s", tt.name, diff)
			}
		})
	}

	t.Run("TLS", func(t *testing.T) {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		conn, err := amqp.DialTLS(s.TLSURL, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatalf("DialTLS %s: %v", s.TLSURL, err)
		}
		conn.Close()
	})
}
