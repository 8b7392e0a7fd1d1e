// Package container runs the outbox-relay container image with
// testcontainers-go, next to the PostgreSQL and Kafka containers of an
// application's tests, so that they exercise the image a deployment runs.
// It needs a Docker engine; package relaytest runs the relay in the test
// process instead, without one, and does not import this package or
// testcontainers-go.
//
//	nw, _ := network.New(ctx) // shared by the PostgreSQL, Kafka and relay containers
//	// ... PostgreSQL (wal_level=logical) with alias "postgres", Kafka with alias "kafka" ...
//	relay, err := container.Run(ctx, "postgres://app:secret@postgres:5432/app", "kafka:9092",
//		network.WithNetwork(nil, nw))
//	testcontainers.CleanupContainer(t, relay)
//
// Invariant: Run returns a relay that answers /readyz (streaming, and a
// broker answered), or an error and no running container.
package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// DefaultImage is the image Run starts unless testcontainers.WithImage names
// another. Its entrypoint must be the outbox-relay binary: Run passes the
// subcommand (setup, run) as the container's command.
const DefaultImage = "outbox-relay:latest"

// MetricsPort is the container port serving /metrics, /healthz and /readyz.
const MetricsPort = "9479/tcp"

// startupTimeout bounds the setup container's run and the relay's wait for
// /readyz.
const startupTimeout = time.Minute

// Relay is a running relay container. Terminate it when done;
// testcontainers.CleanupContainer(t, relay) does so when a test ends.
type Relay struct {
	*testcontainers.DockerContainer
}

// Run starts the relay from dsn's database to brokers and returns once
// /readyz answers. dsn and brokers (comma-separated host:port) are addresses
// as seen from inside the container: on a shared Docker network, the other
// containers' aliases and their container ports.
//
// First it runs "outbox-relay setup" in a container of its own, which
// creates the outbox table if missing, the publication and the replication
// slot; then it starts "outbox-relay run" with OUTBOX_RELAY_PG_DSN,
// OUTBOX_RELAY_KAFKA_BROKERS and OUTBOX_RELAY_METRICS_ADDR=:9479 set, and
// waits for /readyz on MetricsPort.
//
// opts customize both containers, after Run's own settings:
// testcontainers.WithImage for another image, testcontainers.WithEnv for any
// other setting (OUTBOX_RELAY_TOPIC, OUTBOX_RELAY_SLOT, ...: every flag's
// environment variable), network.WithNetwork to join the network of
// PostgreSQL and Kafka. Because they apply to two containers, give networks
// that exist already, not network.WithNewNetwork, and no container name.
//
// A failing setup returns an error holding its output. If the relay
// container does not become ready, Run terminates it and returns an error
// holding the end of its log.
func Run(ctx context.Context, dsn, brokers string, opts ...testcontainers.ContainerCustomizer) (*Relay, error) {
	if dsn == "" || brokers == "" {
		return nil, errors.New("relay container: dsn and brokers are required, as addresses the container can reach")
	}
	if err := setup(ctx, dsn, brokers, opts); err != nil {
		return nil, err
	}
	req, err := request(dsn, brokers, opts)
	if err != nil {
		return nil, err
	}
	c, err := testcontainers.GenericContainer(ctx, req)
	ctr, _ := c.(*testcontainers.DockerContainer) // nil when none was created
	if err != nil {
		err = fmt.Errorf("start relay container from %s: %w%s", req.Image, err, logTail(ctx, ctr))
		return nil, errors.Join(err, testcontainers.TerminateContainer(ctr))
	}
	return &Relay{DockerContainer: ctr}, nil
}

// MetricsURL returns the base URL of the relay's HTTP endpoints as the host
// reaches them, such as http://localhost:32771; append /metrics, /healthz
// or /readyz.
func (r *Relay) MetricsURL(ctx context.Context) (string, error) {
	ep, err := r.PortEndpoint(ctx, MetricsPort, "http")
	if err != nil {
		return "", fmt.Errorf("relay container metrics endpoint: %w", err)
	}
	return ep, nil
}

// request returns the request for the relay container: Run's settings,
// then opts.
func request(dsn, brokers string, opts []testcontainers.ContainerCustomizer) (testcontainers.GenericContainerRequest, error) {
	req := testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image: DefaultImage,
			Env: map[string]string{
				"OUTBOX_RELAY_PG_DSN":        dsn,
				"OUTBOX_RELAY_KAFKA_BROKERS": brokers,
				"OUTBOX_RELAY_METRICS_ADDR":  ":9479",
			},
			Cmd:          []string{"run"},
			ExposedPorts: []string{MetricsPort},
			WaitingFor:   wait.ForHTTP("/readyz").WithPort(MetricsPort).WithStartupTimeout(startupTimeout),
		},
		Started: true,
	}
	for _, opt := range opts {
		if err := opt.Customize(&req); err != nil {
			return req, fmt.Errorf("relay container: customize: %w", err)
		}
	}
	return req, nil
}

// setupRequest returns the request for the setup container: the relay's
// with setup as the command, no ports, and a wait for it to exit.
func setupRequest(dsn, brokers string, opts []testcontainers.ContainerCustomizer) (testcontainers.GenericContainerRequest, error) {
	req, err := request(dsn, brokers, opts)
	if err != nil {
		return req, err
	}
	req.Env = maps.Clone(req.Env)
	req.Cmd = []string{"setup"}
	req.ExposedPorts = nil
	req.WaitingFor = wait.ForExit().WithExitTimeout(startupTimeout)
	return req, nil
}

// setup runs outbox-relay setup to completion and checks its exit code.
func setup(ctx context.Context, dsn, brokers string, opts []testcontainers.ContainerCustomizer) (err error) {
	req, err := setupRequest(dsn, brokers, opts)
	if err != nil {
		return err
	}
	c, err := testcontainers.GenericContainer(ctx, req)
	ctr, _ := c.(*testcontainers.DockerContainer) // nil when none was created
	defer func() { err = errors.Join(err, testcontainers.TerminateContainer(ctr)) }()
	if err != nil {
		return fmt.Errorf("run outbox-relay setup from %s: %w%s", req.Image, err, logTail(ctx, ctr))
	}
	st, err := ctr.State(ctx)
	if err != nil {
		return fmt.Errorf("read the state of the setup container: %w", err)
	}
	if st.ExitCode != 0 {
		return fmt.Errorf("outbox-relay setup exited with status %d%s", st.ExitCode, logTail(ctx, ctr))
	}
	return nil
}

// logTailBytes bounds the container output an error carries.
const logTailBytes = 4 << 10

// logTail returns the end of ctr's output, prefixed for an error message,
// or "" when there is none to read.
func logTail(ctx context.Context, ctr *testcontainers.DockerContainer) string {
	if ctr == nil {
		return ""
	}
	rc, err := ctr.Logs(context.WithoutCancel(ctx))
	if err != nil {
		return ""
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
	}
	return "; container output:\n" + string(b)
}
