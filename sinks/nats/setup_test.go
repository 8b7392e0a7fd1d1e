package nats_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outbox-relay/outbox-relay/sinks/nats"
	"github.com/outbox-relay/outbox-relay/sinks/nats/natstest"
)

// TestSetupCreates checks the streams Setup creates, and that a second
// Setup, as a second relay would run, changes nothing.
func TestSetupCreates(t *testing.T) {
	srv := natstest.Start(t)
	s, _ := setUp(t, srv, nats.Config{}, nil)
	if err := s.Setup(testContext(t)); err != nil {
		t.Fatalf("second Setup: %v", err)
	}
	js := srv.JetStream(t)
	for _, want := range []jetstream.StreamConfig{
		{Name: "OUTBOX", Subjects: []string{"outbox.>"}},
		{Name: "OUTBOX_RELAY_DLQ", Subjects: []string{"outbox-relay-dlq"}},
	} {
		st, err := js.Stream(testContext(t), want.Name)
		if err != nil {
			t.Fatalf("stream %s: %v", want.Name, err)
		}
		got := st.CachedInfo().Config
		type settings struct {
			Subjects   []string
			Storage    jetstream.StorageType
			Duplicates time.Duration
			Replicas   int
			Retention  jetstream.RetentionPolicy
			Discard    jetstream.DiscardPolicy
		}
		wantSettings := settings{want.Subjects, jetstream.FileStorage, 2 * time.Minute, 1, jetstream.LimitsPolicy, jetstream.DiscardOld}
		if diff := cmp.Diff(wantSettings, settings{got.Subjects, got.Storage, got.Duplicates, got.Replicas, got.Retention, got.Discard}); diff != "" {
			t.Errorf("stream %s (-want +got):\n%s", want.Name, diff)
		}
	}
}

// TestSetupExisting checks what Setup says of a stream that exists: it
// leaves one that serves as it is, and refuses one that does not, saying
// why.
func TestSetupExisting(t *testing.T) {
	for _, tt := range []struct {
		name     string
		existing []jetstream.StreamConfig // created first, in order
		cfg      nats.Config
		wantErr  string // "" for none
	}{
		{
			name:     "Serves",
			existing: []jetstream.StreamConfig{{Name: "OUTBOX", Subjects: []string{"outbox.*.*"}, MaxMsgs: 10}},
		},
		{
			name:     "OtherSubjects",
			existing: []jetstream.StreamConfig{{Name: "OUTBOX", Subjects: []string{"other.>"}}},
			wantErr:  `stream "OUTBOX" of events exists with subjects ["other.>"], which do not cover "outbox.*.*"`,
		},
		{
			name:     "NarrowerSubjects",
			existing: []jetstream.StreamConfig{{Name: "OUTBOX", Subjects: []string{"outbox.order.*"}}},
			wantErr:  `which do not cover "outbox.*.*"`,
		},
		{
			name:     "DeadLetterSubject",
			existing: []jetstream.StreamConfig{{Name: "OUTBOX_RELAY_DLQ", Subjects: []string{"dlq"}}},
			wantErr:  `stream "OUTBOX_RELAY_DLQ" of dead letters exists with subjects ["dlq"], which do not cover "outbox-relay-dlq"`,
		},
		{
			name: "NoDuplicateWindow", // only a stream with sources has none
			existing: []jetstream.StreamConfig{
				{Name: "SRC", Subjects: []string{"src"}},
				{Name: "OUTBOX", Subjects: []string{"outbox.>"}, Sources: []*jetstream.StreamSource{{Name: "SRC"}}},
			},
			wantErr: `stream "OUTBOX" of events exists without a duplicate window`,
		},
		{
			name:     "NoAck",
			existing: []jetstream.StreamConfig{{Name: "OUTBOX", Subjects: []string{"outbox.>"}, NoAck: true}},
			wantErr:  "no_ack",
		},
		{
			name:     "OtherStreamCaptures",
			existing: []jetstream.StreamConfig{{Name: "EVENTS", Subjects: []string{"outbox.>"}}},
			wantErr:  `stream "EVENTS" captures some of them already`,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := natstest.Start(t)
			js := srv.JetStream(t)
			for _, c := range tt.existing {
				if _, err := js.CreateStream(testContext(t), c); err != nil {
					t.Fatalf("create stream %s: %v", c.Name, err)
				}
			}
			s, _ := newSink(t, srv, tt.cfg, nil)
			err := s.Setup(testContext(t))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Setup: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Setup = %v, want an error with %q", err, tt.wantErr)
			}
			for _, c := range tt.existing {
				st, err := js.Stream(testContext(t), c.Name)
				if err != nil {
					t.Fatalf("stream %s: %v", c.Name, err)
				}
				wantMax := c.MaxMsgs
				if wantMax == 0 {
					wantMax = -1 // no limit
				}
				if got := st.CachedInfo().Config; !cmp.Equal(got.Subjects, c.Subjects) || got.MaxMsgs != wantMax || got.NoAck != c.NoAck {
					t.Errorf("Setup changed stream %s: subjects %q max msgs %d no ack %v", c.Name, got.Subjects, got.MaxMsgs, got.NoAck)
				}
			}
		})
	}
}
