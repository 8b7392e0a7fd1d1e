package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/internal/freeport"
)

// relayBin is the outbox-relay binary under test: OUTBOX_RELAY_BIN, or one
// TestMain builds.
var relayBin string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		if bin := os.Getenv("OUTBOX_RELAY_BIN"); bin != "" {
			relayBin = bin
		} else {
			dir, err := os.MkdirTemp("", "outbox-relay-e2e-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			relayBin = filepath.Join(dir, "outbox-relay")
			cmd := exec.Command("go", "build", "-race", "-o", relayBin, "../cmd/outbox-relay")
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintln(os.Stderr, "build outbox-relay:", err)
				return 1
			}
		}
		return pgtest.Main(m)
	}())
}

// env is one test's world: a fresh database with the outbox set up, and an
// in-process Kafka-protocol broker.
type env struct {
	t       *testing.T
	dsn     string
	broker  *kfake.Cluster
	brokers string
	slot    string
	bin     string // the relay binary; empty means relayBin
}

const partitions = 6

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOn(t, pgtest.NewDatabase(t))
}

// newEnvOn is newEnv on the database at dsn, which it sets up, with brokerOpts
// added to the broker's options. Its replication slot is named after the
// database, whose name pgtest makes unique on its cluster, so that tests
// may run in parallel on one cluster.
func newEnvOn(t *testing.T, dsn string, brokerOpts ...kfake.Opt) *env {
	t.Helper()
	return newEnvSlot(t, dsn, slotFor(t, dsn), brokerOpts...)
}

// slotFor returns a slot name for the database at dsn: the database's name
// when it is one a slot may have (lower-case letters, digits and
// underscores), and the relay's default otherwise.
func slotFor(t *testing.T, dsn string) string {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parse %s: %v", dsn, err)
	}
	name := cfg.Database
	if name == "" || len(name) > 63 || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
		return "outbox_relay"
	}
	return name
}

// newEnvSlot is newEnvOn with the replication slot named slot: slots are
// the cluster's, so tests that run in parallel need names of their own.
func newEnvSlot(t *testing.T, dsn, slot string, brokerOpts ...kfake.Opt) *env {
	t.Helper()
	opts := append([]kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(partitions)}, brokerOpts...)
	broker, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	e := &env{t: t, dsn: dsn, broker: broker, brokers: strings.Join(broker.ListenAddrs(), ","), slot: slot}
	out, err := e.command(t.Context(), "setup").CombinedOutput()
	if err != nil {
		t.Fatalf("outbox-relay setup: %v\n%s", err, out)
	}
	return e
}

// command returns the binary run with e's settings in its environment.
func (e *env) command(ctx context.Context, args ...string) *exec.Cmd {
	bin := e.bin
	if bin == "" {
		bin = relayBin
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(),
		"OUTBOX_RELAY_PG_DSN="+e.dsn,
		"OUTBOX_RELAY_KAFKA_BROKERS="+e.brokers,
		"OUTBOX_RELAY_SLOT="+e.slot,
		"OUTBOX_RELAY_METRICS_ADDR=127.0.0.1:0",
		"OUTBOX_RELAY_LOG_FORMAT=json",
	)
	return cmd
}

// proc is a running relay.
type proc struct {
	t       *testing.T
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	mu      sync.Mutex
	logs    []string
	metrics string // address of /metrics once logged
	ready   chan struct{}
	started time.Time
}

// start runs `outbox-relay run`, logging its output through t.
func (e *env) start(extraEnv ...string) *proc {
	e.t.Helper()
	return e.startRun(nil, extraEnv...)
}

// startRun starts `outbox-relay run args...` with extraEnv added to e's
// environment; the process is killed when the test ends.
func (e *env) startRun(args []string, extraEnv ...string) *proc {
	e.t.Helper()
	cmd := e.command(context.Background(), append([]string{"run"}, args...)...)
	cmd.Env = append(cmd.Env, extraEnv...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	p := &proc{t: e.t, cmd: cmd, done: make(chan struct{}), ready: make(chan struct{}), started: time.Now()}
	go p.read(stderr)
	e.t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var once sync.Once
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.logs = append(p.logs, line)
		p.mu.Unlock()
		var rec struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil {
			switch rec.Msg {
			case "serving metrics":
				p.mu.Lock()
				p.metrics = rec.Addr
				p.mu.Unlock()
			case "streaming":
				once.Do(func() { close(p.ready) })
			}
		}
	}
	p.err = p.cmd.Wait()
	close(p.done)
}

// waitStreaming waits until the relay logs that it streams.
func (p *proc) waitStreaming(timeout time.Duration) {
	p.t.Helper()
	select {
	case <-p.ready:
	case <-p.done:
		p.t.Fatalf("relay exited before streaming: %v\n%s", p.err, p.logText())
	case <-time.After(timeout):
		p.t.Fatalf("relay not streaming after %s\n%s", timeout, p.logText())
	}
}

func (p *proc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.logs, "\n")
}

// kill sends SIGKILL and waits for the process to go.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// term sends SIGTERM and returns the exit code, failing the test if the
// relay does not exit within timeout.
func (p *proc) term(timeout time.Duration) int {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	return p.waitExit(p.t, timeout, "SIGTERM")
}

// waitExit waits for the relay to exit and returns its exit code; if it
// still runs timeout after what happened (after, in the failure), it
// fails t, the test that waits, at once.
func (p *proc) waitExit(t *testing.T, timeout time.Duration, after string) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("relay still running %s after %s\n%s", timeout, after, p.logText())
	}
	return p.cmd.ProcessState.ExitCode()
}

// consumer reads every outbox topic of the broker from the start.
type consumer struct {
	cl *kgo.Client
}

func (e *env) consumer(opts ...kgo.Opt) *consumer {
	e.t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(e.broker.ListenAddrs()...),
		kgo.ConsumeRegex(),
		kgo.ConsumeTopics(`^outbox\..*`), // never __outbox_relay_checkpoints
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.MetadataMinAge(100 * time.Millisecond),
		kgo.MetadataMaxAge(time.Second),
	}, opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(cl.Close)
	return &consumer{cl: cl}
}

// poll returns the records fetched within d.
func (c *consumer) poll(ctx context.Context, d time.Duration) ([]*kgo.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	fs := c.cl.PollFetches(ctx)
	var errs []error
	fs.EachError(func(topic string, p int32, err error) {
		if ctx.Err() == nil {
			errs = append(errs, fmt.Errorf("fetch %s/%d: %w", topic, p, err))
		}
	})
	if len(errs) > 0 {
		return fs.Records(), errs[0]
	}
	return fs.Records(), nil
}

// freeAddr returns a loopback address on which nothing listened a moment
// ago, on a port of freeport.
func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}
