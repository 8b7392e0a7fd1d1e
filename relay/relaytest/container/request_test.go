package container

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// These tests check the container requests Run makes; they need no Docker.

const (
	testDSN     = "postgres://app:secret@postgres:5432/app"
	testBrokers = "kafka:9092"
)

func TestRequest(t *testing.T) {
	tests := []struct {
		name      string
		opts      []testcontainers.ContainerCustomizer
		wantImage string
		wantEnv   map[string]string
	}{
		{
			name:      "defaults",
			wantImage: DefaultImage,
			wantEnv: map[string]string{
				"OUTBOX_RELAY_PG_DSN":        testDSN,
				"OUTBOX_RELAY_KAFKA_BROKERS": testBrokers,
				"OUTBOX_RELAY_METRICS_ADDR":  ":9479",
			},
		},
		{
			name: "options come after the defaults",
			opts: []testcontainers.ContainerCustomizer{
				testcontainers.WithImage("registry.example.com/outbox-relay:1.2.3"),
				testcontainers.WithEnv(map[string]string{"OUTBOX_RELAY_TOPIC": "events.{event_type}", "OUTBOX_RELAY_KAFKA_BROKERS": "other:9092"}),
			},
			wantImage: "registry.example.com/outbox-relay:1.2.3",
			wantEnv: map[string]string{
				"OUTBOX_RELAY_PG_DSN":        testDSN,
				"OUTBOX_RELAY_KAFKA_BROKERS": "other:9092",
				"OUTBOX_RELAY_METRICS_ADDR":  ":9479",
				"OUTBOX_RELAY_TOPIC":         "events.{event_type}",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := request(testDSN, testBrokers, tt.opts)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			sreq, err := setupRequest(testDSN, testBrokers, tt.opts)
			if err != nil {
				t.Fatalf("setupRequest: %v", err)
			}
			for _, r := range []testcontainers.GenericContainerRequest{req, sreq} {
				if r.Image != tt.wantImage {
					t.Errorf("image %q, want %q", r.Image, tt.wantImage)
				}
				if diff := cmp.Diff(tt.wantEnv, r.Env); diff != "" {
					t.Errorf("env mismatch (-want +got):\n%s", diff)
				}
				if !r.Started {
					t.Errorf("request does not start the container")
				}
			}

			if diff := cmp.Diff([]string{"run"}, req.Cmd); diff != "" {
				t.Errorf("relay command mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{MetricsPort}, req.ExposedPorts); diff != "" {
				t.Errorf("relay ports mismatch (-want +got):\n%s", diff)
			}
			hw, ok := req.WaitingFor.(*wait.HTTPStrategy)
			if !ok || hw.Path != "/readyz" || hw.Port.String() != MetricsPort {
				t.Errorf("relay waits for %v, want HTTP /readyz on %s", req.WaitingFor, MetricsPort)
			}

			if diff := cmp.Diff([]string{"setup"}, sreq.Cmd); diff != "" {
				t.Errorf("setup command mismatch (-want +got):\n%s", diff)
			}
			if len(sreq.ExposedPorts) != 0 {
				t.Errorf("setup exposes %v, want nothing", sreq.ExposedPorts)
			}
			if _, ok := sreq.WaitingFor.(*wait.ExitStrategy); !ok {
				t.Errorf("setup waits for %v, want it to exit", sreq.WaitingFor)
			}
		})
	}
}

func TestRunNeedsAddresses(t *testing.T) {
	// Checked before any container, so it fails the same without Docker.
	for _, args := range [][2]string{{"", testBrokers}, {testDSN, ""}} {
		if r, err := Run(t.Context(), args[0], args[1]); err == nil {
			t.Errorf("Run(%q, %q) = %v, want an error", args[0], args[1], r)
		}
	}
}
