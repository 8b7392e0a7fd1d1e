package natstest_test

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/nats/natstest"
	"github.com/outbox-relay/outbox-relay/sinks/sinktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func createStream(t *testing.T, js jetstream.JetStream, name string, subjects ...string) {
	t.Helper()
	if _, err := js.CreateStream(testContext(t), jetstream.StreamConfig{Name: name, Subjects: subjects, Storage: jetstream.FileStorage}); err != nil {
		t.Fatalf("create stream %s: %v", name, err)
	}
}

func publish(t *testing.T, js jetstream.JetStream, m *natsgo.Msg) {
	t.Helper()
	if _, err := js.PublishMsg(testContext(t), m); err != nil {
		t.Fatalf("publish to %s: %v", m.Subject, err)
	}
}

// TestStartTime measures a start and a restart with a stored stream.
func TestStartTime(t *testing.T) {
	start := time.Now()
	s := natstest.Start(t)
	started := time.Since(start)
	createStream(t, s.JetStream(t), "S", "s.>")
	s.Stop(t)
	start = time.Now()
	s.Start(t)
	t.Logf("start took %s, restart with a stream %s", started.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// TestStopKeepsData checks that Stop and Start keep the address and the
// stored messages, and that a client reconnects by itself.
func TestStopKeepsData(t *testing.T) {
	s := natstest.Start(t)
	url := s.URL
	js := s.JetStream(t)
	createStream(t, js, "S", "s.>")
	publish(t, js, &natsgo.Msg{Subject: "s.1", Data: []byte("before")})

	s.Stop(t)
	if c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))); err == nil {
		c.Close()
		t.Fatal("the stopped server's port accepts connections")
	}
	s.Start(t)
	if s.URL != url {
		t.Errorf("URL after Start = %s, want %s", s.URL, url)
	}
	publish(t, js, &natsgo.Msg{Subject: "s.2", Data: []byte("after")}) // the client reconnected

	var got []string
	for _, m := range s.Read(t, "S") {
		got = append(got, m.Destination+"="+string(m.Payload))
	}
	if diff := cmp.Diff([]string{"s.1=before", "s.2=after"}, got); diff != "" {
		t.Errorf("Read after restart (-want +got):\n%s", diff)
	}
}

// TestRead checks the conversion of messages: the key, the header order,
// and what is left out.
func TestRead(t *testing.T) {
	s := natstest.Start(t)
	js := s.JetStream(t)
	createStream(t, js, "S", "s.>")
	createStream(t, js, "D", "d")
	h := natsgo.Header{}
	for _, kv := range [][2]string{
		{"zeta", "z"}, {delivery.HeaderPosition, "p"}, {"alpha", "a1"}, {"alpha", "a2"},
		{delivery.HeaderAggregateType, "order"}, {delivery.HeaderID, "e1"}, {delivery.HeaderEventType, "Created"},
		{delivery.HeaderAggregateID, "42"}, {jetstream.MsgIDHeader, "e1"},
	} {
		h.Add(kv[0], kv[1])
	}
	publish(t, js, &natsgo.Msg{Subject: "s.order.42", Header: h, Data: []byte(`{"n":1}`)})
	letter := natsgo.Header{}
	for _, kv := range [][2]string{
		{delivery.HeaderDLQTime, "t"}, {delivery.HeaderDLQReason, "size"}, {delivery.HeaderID, "e2"}, {"extra", "x"},
	} {
		letter.Add(kv[0], kv[1])
	}
	publish(t, js, &natsgo.Msg{Subject: "d", Header: letter})

	want := []sinktest.Message{{
		Destination: "s.order.42",
		Key:         "42",
		Headers: []delivery.Header{
			{Key: delivery.HeaderID, Value: []byte("e1")},
			{Key: delivery.HeaderEventType, Value: []byte("Created")},
			{Key: delivery.HeaderAggregateType, Value: []byte("order")},
			{Key: delivery.HeaderPosition, Value: []byte("p")},
			{Key: "alpha", Value: []byte("a1")},
			{Key: "alpha", Value: []byte("a2")},
			{Key: "zeta", Value: []byte("z")},
		},
		Payload: []byte(`{"n":1}`),
	}}
	if diff := cmp.Diff(want, s.Read(t, "S")); diff != "" {
		t.Errorf("Read (-want +got):\n%s", diff)
	}
	wantLetters := []sinktest.Message{{
		Destination: "d",
		Headers: []delivery.Header{
			{Key: delivery.HeaderID, Value: []byte("e2")},
			{Key: delivery.HeaderDLQReason, Value: []byte("size")},
			{Key: delivery.HeaderDLQTime, Value: []byte("t")},
			{Key: "extra", Value: []byte("x")},
		},
		Payload: []byte{},
	}}
	if diff := cmp.Diff(wantLetters, s.ReadDeadLetters(t, "D")); diff != "" {
		t.Errorf("ReadDeadLetters (-want +got):\n%s", diff)
	}
}

// TestReadMany checks that Read returns every message of a stream larger
// than one fetch, in order, and nothing of an empty one.
func TestReadMany(t *testing.T) {
	s := natstest.Start(t)
	js := s.JetStream(t)
	createStream(t, js, "S", "s.>")
	createStream(t, js, "E", "e")
	const n = 2500
	for i := range n {
		if _, err := js.PublishAsync("s.x", []byte{byte(i), byte(i >> 8)}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-testContext(t).Done():
		t.Fatal("publishes not acknowledged")
	}
	got := s.Read(t, "S")
	if len(got) != n {
		t.Fatalf("Read returned %d messages, want %d", len(got), n)
	}
	for i, m := range got {
		if m.Payload[0] != byte(i) || m.Payload[1] != byte(i>>8) {
			t.Fatalf("message %d has payload %v, out of order", i, m.Payload)
		}
	}
	if got := s.Read(t, "E"); len(got) != 0 {
		t.Errorf("Read of an empty stream = %d messages, want none", len(got))
	}
}

// TestNewClose checks that a server from New serves JetStream until Close,
// which shuts it down and removes its store, and that a second Close does
// nothing.
func TestNewClose(t *testing.T) {
	s, err := natstest.New(natstest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := natsgo.Connect(s.URL)
	if err != nil {
		s.Close()
		t.Fatalf("connect to %s: %v", s.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	createStream(t, js, "S", "s.>")
	publish(t, js, &natsgo.Msg{Subject: "s.1", Data: []byte("kept until Close")})
	store := natstest.StoreDir(s)
	if _, err := os.Stat(store); err != nil {
		t.Fatalf("store of a running server: %v", err)
	}
	nc.Close()

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))); err == nil {
		c.Close()
		t.Error("the closed server's port accepts connections")
	}
	if _, err := os.Stat(store); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("store %s after Close: %v, want it removed", store, err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
