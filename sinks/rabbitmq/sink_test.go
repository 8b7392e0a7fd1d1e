package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// TestReadBack checks each property and header of a message as an
// independent client reads it.
func TestReadBack(t *testing.T) {
	cfg := testConfig(t)
	cfg.RoutingKey = "{aggregate_type}.{event_type}.{aggregate_id}"
	s, _ := newSink(t, cfg)
	setup(t, s)
	queue := unique("readback")
	serverFor(t).Bind(t, cfg.Exchange, queue)

	ev := event(func(e *schema.Event) {
		e.Headers = []byte(`{"trace_id":"t-1","n":5,"obj":{"a":[1,2]},"nul":null,"position":"forged"}`)
		e.Replayed = time.Date(2026, 12, 1, 10, 0, 0, 123, time.UTC)
	})
	r := newResults()
	r.publish(s, ev)
	r.wait(t, 1)
	if f := r.failures(); len(f) > 0 {
		t.Fatal(f)
	}

	ch, err := serverFor(t).Dial(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	d, ok, err := ch.Get(queue, true)
	if err != nil || !ok {
		t.Fatalf("Get(%s) = %v, %v", queue, ok, err)
	}
	type props struct {
		Exchange, RoutingKey, ContentType, MessageId, Type, AppId string
		DeliveryMode                                              uint8
		Headers                                                   amqp.Table
		Body                                                      string
	}
	want := props{
		Exchange: cfg.Exchange, RoutingKey: "order.created.o-42", ContentType: "application/json",
		MessageId: "e-1", Type: "created", AppId: "outbox-relay", DeliveryMode: amqp.Persistent,
		Headers: amqp.Table{
			"id": "e-1", "event_type": "created", "aggregate_type": "order",
			"position": "00000000016b374800000003", "replayed": "true", "replay_started": "2026-12-01T10:00:00.000000123Z",
			"aggregate_id": "o-42", "trace_id": "t-1", "n": "5", "obj": `{"a":[1,2]}`, "nul": "",
		},
		Body: `{"total":10}`,
	}
	got := props{d.Exchange, d.RoutingKey, d.ContentType, d.MessageId, d.Type, d.AppId, d.DeliveryMode, d.Headers, string(d.Body)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("message read back (-want +got):\n%s", diff)
	}
}

// TestUnroutable checks that events no binding matches are poison
// (ReasonUnroutable) once they came back for Config.UnroutableGrace, and
// only they, in batches with routable ones; that their dead letters reach
// the dead-letter queue; and that an event whose queue is bound within the
// grace is delivered.
func TestUnroutable(t *testing.T) {
	t.Run("poison", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.UnroutableGrace = 300 * time.Millisecond
		s, _ := newSink(t, cfg)
		setup(t, s)
		queue := unique("routable")
		bind(t, queue, "routable.#", cfg.Exchange)

		routable, lost := events("routable", 300, 30), events("lost", 30, 30)
		r := newResults()
		begin := time.Now()
		for i, ev := range routable {
			r.publish(s, ev)
			if i%10 == 0 {
				r.publish(s, lost[i/10])
			}
		}
		r.wait(t, len(routable)+len(lost))
		if took := time.Since(begin); took < cfg.UnroutableGrace {
			t.Errorf("every event done after %s, before the unroutable grace of %s passed", took, cfg.UnroutableGrace)
		}
		for _, ev := range routable {
			if err, _ := r.err(ev.ID); err != nil {
				t.Errorf("routable event %s: done got %v", ev.ID, err)
			}
		}
		for _, ev := range lost {
			err, _ := r.err(ev.ID)
			if reason, ok := s.Poison(err); !ok || reason != delivery.ReasonUnroutable {
				t.Fatalf("unroutable event %s: done got %v (poison %q %v), want poison %q", ev.ID, err, reason, ok, delivery.ReasonUnroutable)
			}
		}
		got := readAll(t, queue, routable)
		if len(got) != len(routable) {
			t.Errorf("queue holds %d routable events, want %d", len(got), len(routable))
		}
		checkOrder(t, got)

		// Set the unroutable events aside, as the relay does under
		// PolicyDLQ.
		dr := newResults()
		for _, ev := range lost {
			err, _ := r.err(ev.ID)
			s.DeadLetter(context.Background(), ev, delivery.ReasonUnroutable, err, 1, dr.done(ev.ID))
		}
		dr.wait(t, len(lost))
		if f := dr.failures(); len(f) > 0 {
			t.Fatal(f)
		}
		var letters []string
		waitFor(t, "dead letters", func() bool {
			letters = letters[:0]
			for _, m := range serverFor(t).ReadDeadLetters(t, cfg.DeadLetterQueue) {
				id, _ := m.Header(delivery.HeaderID)
				letters = append(letters, id)
				if reason, _ := m.Header(delivery.HeaderDLQReason); reason != delivery.ReasonUnroutable {
					t.Errorf("dead letter %s: reason %q", id, reason)
				}
				if dest, _ := m.Header(delivery.HeaderDLQTopic); dest != cfg.Exchange+"/lost.created" {
					t.Errorf("dead letter %s: dlq_topic %q, want %q", id, dest, cfg.Exchange+"/lost.created")
				}
				if e, _ := m.Header(delivery.HeaderDLQError); !strings.Contains(e, "312 NO_ROUTE") {
					t.Errorf("dead letter %s: dlq_error %q does not name 312 NO_ROUTE", id, e)
				}
			}
			return len(letters) >= len(lost)
		})
		var want []string
		for _, ev := range lost {
			want = append(want, ev.ID)
		}
		if diff := cmp.Diff(want, letters); diff != "" {
			t.Errorf("dead letters (-want +got):\n%s", diff)
		}
	})

	t.Run("bound within the grace", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.UnroutableGrace = time.Hour
		s, g, _ := newGatedSink(t, cfg)
		setup(t, s)
		evs := events("late", 100, 10)
		r := newResults()
		r.publish(s, evs...)
		waitFor(t, "events returned twice", func() bool {
			return g.failed(func(err error) bool { return errors.Is(err, errNotRoutedYet) }) >= 2*10
		})
		if n := r.count(); n != 0 {
			t.Fatalf("%d events had a done call within the grace: %v", n, r.failures())
		}
		queue := unique("late")
		serverFor(t).Bind(t, cfg.Exchange, queue)
		r.wait(t, len(evs))
		if f := r.failures(); len(f) > 0 {
			t.Fatal(f)
		}
		checkOrder(t, readAll(t, queue, evs))
	})

	t.Run("no grace", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.UnroutableGrace = -1
		s, g, _ := newGatedSink(t, cfg)
		setup(t, s)
		ev := events("first", 1, 1)[0]
		r := newResults()
		r.publish(s, ev)
		r.wait(t, 1)
		err, _ := r.err(ev.ID)
		if reason, ok := s.Poison(err); !ok || reason != delivery.ReasonUnroutable {
			t.Fatalf("done got %v, want poison %q", err, delivery.ReasonUnroutable)
		}
		if n := g.failed(func(error) bool { return true }); n != 1 {
			t.Errorf("the event was sent %d times, want once", n)
		}
	})
}

// bind declares queue, durable, and binds it to exchange with key.
func bind(t *testing.T, queue, key, exchange string) {
	t.Helper()
	ch, err := serverFor(t).Dial(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(queue, key, exchange, false, nil); err != nil {
		t.Fatal(err)
	}
}

// TestSize checks that an event over Config.MaxMessageBytes is poison at
// once (ReasonSize) and its dead letter goes without the payload, while
// the next event of its aggregate is delivered.
func TestSize(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxMessageBytes = 4096
	s, _ := newSink(t, cfg)
	setup(t, s)
	queue := unique("size")
	serverFor(t).Bind(t, cfg.Exchange, queue)

	evs := events("size", 2, 1)
	evs[0].Payload = []byte(`"` + strings.Repeat("x", 5000) + `"`)
	r := newResults()
	r.publish(s, evs[0])
	err, called := r.err(evs[0].ID)
	if !called {
		t.Fatal("done of the event over the maximum was not called before Publish returned")
	}
	if reason, ok := s.Poison(err); !ok || reason != delivery.ReasonSize {
		t.Fatalf("done got %v, want poison %q", err, delivery.ReasonSize)
	}
	r.publish(s, evs[1])
	r.wait(t, 2)
	if err, _ := r.err(evs[1].ID); err != nil {
		t.Fatalf("event after the large one: %v", err)
	}
	readAll(t, queue, evs[1:])

	dr := newResults()
	s.DeadLetter(context.Background(), evs[0], delivery.ReasonSize, err, 1, dr.done(evs[0].ID))
	dr.wait(t, 1)
	if f := dr.failures(); len(f) > 0 {
		t.Fatal(f)
	}
	var letters []string
	waitFor(t, "the dead letter", func() bool {
		ms := serverFor(t).ReadDeadLetters(t, cfg.DeadLetterQueue)
		for _, m := range ms {
			omitted, _ := m.Header(delivery.HeaderDLQPayloadOmitted)
			letters = append(letters, fmt.Sprintf("%s omitted=%s payload=%d", m.Key, omitted, len(m.Payload)))
		}
		return len(ms) > 0
	})
	if diff := cmp.Diff([]string{"size-k0 omitted=true payload=0"}, letters); diff != "" {
		t.Errorf("dead letters (-want +got):\n%s", diff)
	}
}

// TestRestart stops the node (cleanly, then by SIGKILL) while events flow
// and starts it again: no event is lost, none fails, and each aggregate's
// events stay in order. A confirmed persistent message in a durable queue
// survives even SIGKILL.
func TestRestart(t *testing.T) {
	for _, tt := range []struct {
		name string
		stop func(testing.TB)
	}{
		{"Stop", func(t testing.TB) { serverFor(t).Stop(t) }},
		{"Kill", func(t testing.TB) { serverFor(t).Kill(t) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			s, _ := newSink(t, cfg)
			setup(t, s)
			queue := unique("restart")
			serverFor(t).Bind(t, cfg.Exchange, queue)
			serverFor(t).Sync(t) // or a kill may lose the binding

			evs := events("restart", 100_000, 40)
			r := newResults()
			stop := make(chan struct{})
			published := make(chan int)
			go func() {
				// An event a millisecond or so, until told to stop.
				n := 0
				defer func() { published <- n }()
				tick := time.NewTicker(time.Millisecond)
				defer tick.Stop()
				for n < len(evs) {
					select {
					case <-stop:
						return
					case <-tick.C:
						r.publish(s, evs[n])
						n++
					}
				}
			}()
			r.wait(t, 200)
			tt.stop(t)
			before := r.count()
			serverFor(t).Start(t)
			r.wait(t, before+200) // events flow again
			close(stop)
			n := <-published
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if f := r.failures(); len(f) > 0 {
				_, q := exists(t, cfg.Exchange, queue)
				t.Fatalf("%d failures, such as %v\nqueue %s exists: %v\n%s", len(f), f[:min(5, len(f))], queue, q, serverFor(t).LogTail())
			}
			begin := time.Now()
			got := readAll(t, queue, evs[:n])
			dups := checkOrder(t, got)
			t.Logf("%d events, %d acknowledged before the restart, %d duplicates, read in %s", n, before, dups, time.Since(begin))
		})
	}
}

// TestPing checks Ping's advice on real failures, and that no error shows
// a password.
func TestPing(t *testing.T) {
	node := serverFor(t)
	plain := strings.TrimPrefix(node.URL, "amqp://guest:guest@")
	tlsAddr := strings.TrimPrefix(node.TLSURL, "amqps://guest:guest@")
	closed := "127.0.0.1:1"
	for _, tt := range []struct {
		name string
		cfg  Config
		want string // "" means Ping succeeds
	}{
		{"up", Config{URL: node.URL}, ""},
		{"TLS", Config{URL: node.TLSURL, TLS: TLSConfig{CAFile: node.CAFile}}, ""},
		{"refused", Config{URL: "amqp://" + closed + "/"}, "(connection refused); check that it is running and reachable"},
		{"password", Config{URL: "amqp://guest:pw-secret@" + plain}, `refused the credentials of user "guest"`},
		{"password field", Config{URL: node.URL, Password: "pw-secret"}, `refused the credentials of user "guest"`},
		{"vhost", Config{URL: node.URL + "nope"}, `refused vhost "nope" to user "guest"`},
		{"untrusted", Config{URL: node.TLSURL}, "signed by an authority the sink does not trust"},
		{"server name", Config{URL: node.TLSURL, TLS: TLSConfig{CAFile: node.CAFile, ServerName: "other.example"}}, "not for the host the sink checks"},
		{"TLS to a plain port", Config{URL: "amqps://guest:guest@" + plain}, "did not answer in TLS"},
		{"plain to a TLS port", Config{URL: "amqp://guest:guest@" + tlsAddr}, "closed the connection before speaking AMQP 0-9-1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Delivery = testDelivery
			s, _ := newSink(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := s.Ping(ctx)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Ping: %v", err)
			case tt.want == "":
				return
			case err == nil:
				t.Fatalf("Ping = nil, want an error with %q", tt.want)
			case !strings.Contains(err.Error(), tt.want):
				t.Errorf("Ping = %v, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "pw-secret") {
				t.Errorf("Ping = %v holds the password", err)
			}
			t.Logf("Ping: %v", err)
		})
	}
}

// TestNew checks that New neither dials nor fails when the server is down,
// that publishing holds events until it is up, and that Close fails them.
func TestNew(t *testing.T) {
	s, l := newSink(t, Config{URL: "amqp://127.0.0.1:1/", Delivery: testDelivery})
	evs := events("down", 3, 1)
	r := newResults()
	r.publish(s, evs...)
	waitFor(t, "a retry logged", func() bool { return len(l.at(slog.LevelWarn)) > 0 })
	if n := r.count(); n != 0 {
		t.Errorf("%d events had a done call while the server is down (%v); want them held", n, r.failures())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r.wait(t, len(evs))
	for _, ev := range evs {
		if err, _ := r.err(ev.ID); !errors.Is(err, delivery.ErrClosed) {
			t.Errorf("event %s after Close: %v, want ErrClosed", ev.ID, err)
		}
	}
}

// TestBlocked sets off the node's memory alarm, which blocks publishers:
// the Sink logs it and holds events, failing none, and delivers them once
// the alarm clears.
func TestBlocked(t *testing.T) {
	node := serverFor(t)
	cfg := testConfig(t)
	s, l := newSink(t, cfg)
	setup(t, s)
	queue := unique("blocked")
	node.Bind(t, cfg.Exchange, queue)
	evs := events("blocked", 300, 10)
	r := newResults()
	r.publish(s, evs[:100]...)
	r.wait(t, 100)

	node.Ctl(t, "set_vm_memory_high_watermark", "0")
	cleared := false
	t.Cleanup(func() {
		if !cleared {
			node.Ctl(t, "set_vm_memory_high_watermark", "0.4")
		}
	})
	r.publish(s, evs[100:]...)
	waitFor(t, "the block logged", func() bool {
		return slices.Contains(l.at(slog.LevelWarn), "RabbitMQ blocks publishing until its resource alarm clears; events are held")
	})
	if f := r.failures(); len(f) > 0 {
		t.Fatalf("while blocked: %v", f)
	}
	node.Ctl(t, "set_vm_memory_high_watermark", "0.4")
	cleared = true
	r.wait(t, len(evs))
	if f := r.failures(); len(f) > 0 {
		t.Fatal(f)
	}
	if !slices.Contains(l.at(slog.LevelInfo), "RabbitMQ lets publishing go on") {
		t.Error("the end of the block was not logged")
	}
	checkOrder(t, readAll(t, queue, evs))
}
