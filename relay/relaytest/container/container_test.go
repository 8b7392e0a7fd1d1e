package container_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/jackc/pgx/v5"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/outbox-relay/outbox-relay/relay/relaytest/container"
	"github.com/outbox-relay/outbox-relay/schema"
)

// envImage names the relay image TestRun starts; empty means
// container.DefaultImage.
const envImage = "OUTBOX_RELAY_TEST_IMAGE"

// skipWithoutDocker skips t, at once and saying why, when no Docker engine
// answers or the relay image is not built.
func skipWithoutDocker(t *testing.T, image string) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Docker; skipped by -short")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	const why = "no Docker engine answers, so the relay image is not tested (relaytest's in-process tests need none): "
	defer func() {
		if r := recover(); r != nil { // testcontainers panics on some broken configurations
			t.Skip(why + fmt.Sprint(r))
		}
	}()
	provider, err := testcontainers.ProviderDefault.GetProvider()
	if err != nil {
		t.Skip(why + err.Error())
	}
	defer provider.Close()
	if err := provider.Health(ctx); err != nil {
		t.Skip(why + err.Error())
	}
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		t.Fatalf("connect to Docker: %v", err)
	}
	defer cli.Close()
	if _, err := cli.ImageInspect(ctx, image); errdefs.IsNotFound(err) {
		t.Skipf("image %s is not built; build it (docker build -t %s .) or name another in %s", image, image, envImage)
	} else if err != nil {
		t.Fatalf("inspect image %s: %v", image, err)
	}
}

// TestRun starts PostgreSQL, Kafka and the relay image on one Docker
// network, commits an event through PostgreSQL's published port, and reads
// from the relay's metrics that it was published.
func TestRun(t *testing.T) {
	image := os.Getenv(envImage)
	if image == "" {
		image = container.DefaultImage
	}
	skipWithoutDocker(t, image)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	nw, err := network.New(ctx)
	if err != nil {
		t.Fatalf("create network: %v", err)
	}
	t.Cleanup(func() { _ = nw.Remove(context.Background()) })

	pg, err := testcontainers.Run(ctx, "postgres:17-alpine",
		network.WithNetwork([]string{"postgres"}, nw),
		testcontainers.WithEnv(map[string]string{"POSTGRES_PASSWORD": "secret"}),
		testcontainers.WithCmd("postgres", "-c", "wal_level=logical"),
		testcontainers.WithExposedPorts("5432/tcp"),
		testcontainers.WithWaitStrategy(
			wait.ForLog("database system is ready to accept connections").WithOccurrence(2),
			wait.ForListeningPort("5432/tcp")),
	)
	testcontainers.CleanupContainer(t, pg)
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}

	kafka, err := testcontainers.Run(ctx, "apache/kafka:3.9.1",
		network.WithNetwork([]string{"kafka"}, nw),
		testcontainers.WithEnv(map[string]string{
			"KAFKA_NODE_ID":                                  "1",
			"KAFKA_PROCESS_ROLES":                            "broker,controller",
			"KAFKA_LISTENERS":                                "PLAINTEXT://:9092,CONTROLLER://:9093",
			"KAFKA_ADVERTISED_LISTENERS":                     "PLAINTEXT://kafka:9092",
			"KAFKA_CONTROLLER_LISTENER_NAMES":                "CONTROLLER",
			"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP":           "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
			"KAFKA_CONTROLLER_QUORUM_VOTERS":                 "1@localhost:9093",
			"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "1",
			"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
			"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "1",
			"KAFKA_NUM_PARTITIONS":                           "1",
		}),
		testcontainers.WithWaitStrategy(wait.ForLog("Kafka Server started")),
	)
	testcontainers.CleanupContainer(t, kafka)
	if err != nil {
		t.Fatalf("start Kafka: %v", err)
	}

	relay, err := container.Run(ctx, "postgres://postgres:secret@postgres:5432/postgres?sslmode=disable", "kafka:9092",
		testcontainers.WithImage(image),
		network.WithNetwork(nil, nw),
	)
	if relay != nil {
		testcontainers.CleanupContainer(t, relay)
	}
	if err != nil {
		t.Fatalf("container.Run: %v", err)
	}

	pgAddr, err := pg.PortEndpoint(ctx, "5432/tcp", "")
	if err != nil {
		t.Fatalf("PostgreSQL endpoint: %v", err)
	}
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres:secret@%s/postgres?sslmode=disable", pgAddr))
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer conn.Close(context.Background())
	msg, err := schema.NewMessage("order", "o-1", "order.placed", map[string]int{"total_cents": 1250})
	if err != nil {
		t.Fatalf("NewMessage: %v", err)
	}
	if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return schema.Insert(ctx, tx, msg) }); err != nil {
		t.Fatalf("insert: %v", err)
	}

	base, err := relay.MetricsURL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const want = `outbox_relay_events_published_total{topic="outbox.order"} 1`
	var last string
	for !strings.Contains(last, want) {
		select {
		case <-ctx.Done():
			t.Fatalf("the relay's metrics never showed %s; last scrape:\n%s", want, last)
		case <-time.After(200 * time.Millisecond):
		}
		last = scrape(ctx, base+"/metrics")
	}
}

// scrape returns the body at url, or the error as text.
func scrape(ctx context.Context, url string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
