package deploy_test

// Checks of the deployment files under deploy/, runnable without a Docker
// engine, the compose plugin or a cluster: the Dockerfile's build line is the
// Makefile's and builds a static binary; the compose stack's references,
// mounts and settings hold; the Kubernetes manifests decode strictly into the
// API types and carry the probes, limits and security settings the relay
// needs; the release configuration builds what make builds.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"sigs.k8s.io/yaml"
)

// deployRoot is the repository root, relative to this package.
const deployRoot = ".."

// Values the Makefile and the Dockerfile are given in these tests.
const (
	deployTestVersion = "v0.0.0-deploytest"
	deployTestCommit  = "0123456789abcdef0123456789abcdef01234567"
)

// ---- the relay's settings ----

var (
	relayFlagsOnce sync.Once
	relayFlags     map[string]string
	relayFlagsErr  error
	// helpFlag matches a flag of the help page: "  --name type  (env NAME)",
	// then its text, which ends "(default value)" unless the default is
	// the type's zero value.
	helpFlag    = regexp.MustCompile(`(?m)^  --([a-z0-9-]+)(?: (\S+))?  \(env ([A-Z0-9_]+)\)\n      (.*)$`)
	helpDefault = regexp.MustCompile(`\(default (.+)\)$`)
)

// relaySettings returns the environment variable of every flag of
// `outbox-relay run`, from its help, with the default the help prints (the
// type's name when the default is empty).
func relaySettings(t *testing.T) map[string]string {
	t.Helper()
	relayFlagsOnce.Do(func() {
		out, err := exec.Command(relayBin, "run", "-h").CombinedOutput()
		_, flags, ok := strings.Cut(string(out), "\nFLAGS\n")
		if err != nil || !ok {
			relayFlagsErr = fmt.Errorf("outbox-relay run -h: %v, want a FLAGS section\n%s", err, out)
			return
		}
		relayFlags = map[string]string{}
		for _, m := range helpFlag.FindAllStringSubmatch(flags, -1) {
			name, typ, env, text := m[1], m[2], m[3], m[4]
			if want := "OUTBOX_RELAY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")); env != want {
				relayFlagsErr = fmt.Errorf("outbox-relay run -h: --%s reads %s, want %s", name, env, want)
				return
			}
			v := typ
			if d := helpDefault.FindStringSubmatch(text); d != nil {
				v = d[1]
				if u, err := strconv.Unquote(v); err == nil {
					v = u
				}
			}
			relayFlags[env] = v
		}
		for _, must := range []string{"OUTBOX_RELAY_PG_DSN", "OUTBOX_RELAY_KAFKA_BROKERS", "OUTBOX_RELAY_METRICS_ADDR", "OUTBOX_RELAY_SHUTDOWN_TIMEOUT"} {
			if _, ok := relayFlags[must]; !ok {
				relayFlagsErr = fmt.Errorf("outbox-relay run -h lists no flag for %s among %d:\n%s", must, len(relayFlags), out)
			}
		}
	})
	if relayFlagsErr != nil {
		t.Fatal(relayFlagsErr)
	}
	return relayFlags
}

// checkSettingNames reports every OUTBOX_RELAY_* name in names that is not a
// relay setting.
func checkSettingNames(t *testing.T, where string, names []string) {
	t.Helper()
	known := relaySettings(t)
	for _, n := range names {
		if strings.HasPrefix(n, "OUTBOX_RELAY_") {
			if _, ok := known[n]; !ok {
				t.Errorf("%s: %s is not a relay setting (outbox-relay run has no such flag)", where, n)
			}
		}
	}
}

// metricsPort is the port of the relay's metrics address in settings, or of
// the default.
func metricsPort(t *testing.T, settings map[string]string) int {
	t.Helper()
	addr, ok := settings["OUTBOX_RELAY_METRICS_ADDR"]
	if !ok {
		addr = relaySettings(t)["OUTBOX_RELAY_METRICS_ADDR"]
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("metrics address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("metrics address %q: %v", addr, err)
	}
	return n
}

// shutdownTimeout is the drain timeout in settings, or the default.
func shutdownTimeout(t *testing.T, settings map[string]string) time.Duration {
	t.Helper()
	s, ok := settings["OUTBOX_RELAY_SHUTDOWN_TIMEOUT"]
	if !ok {
		s = relaySettings(t)["OUTBOX_RELAY_SHUTDOWN_TIMEOUT"]
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("OUTBOX_RELAY_SHUTDOWN_TIMEOUT %q: %v", s, err)
	}
	return d
}

// graceMargin is how much longer than the relay's shutdown timeout an
// orchestrator must wait after SIGTERM before it sends SIGKILL: the whole
// clean stop (reading to a transaction's end, draining, confirming the final
// position) fits inside --shutdown-timeout, and the margin covers the
// process's exit and the orchestrator's own timing.
const graceMargin = 15 * time.Second

// checkGracePeriod reports a grace period shorter than the shutdown timeout
// in settings (or the default) plus graceMargin.
func checkGracePeriod(t *testing.T, where string, grace time.Duration, settings map[string]string) {
	t.Helper()
	if st := shutdownTimeout(t, settings); grace < st+graceMargin {
		t.Errorf("%s: grace period %s, want at least the shutdown timeout %s + %s = %s, so that SIGKILL never cuts a clean stop short",
			where, grace, st, graceMargin, st+graceMargin)
	}
}

// checkRelayAccepts runs `outbox-relay run` with settings, the database and
// the brokers pointed at a closed port: a setting the relay refuses exits 2
// before anything is dialled; accepted ones exit 1, unable to reach Kafka.
func checkRelayAccepts(t *testing.T, settings map[string]string) {
	t.Helper()
	if dsn := settings["OUTBOX_RELAY_PG_DSN"]; dsn != "" {
		if _, err := pgconn.ParseConfig(dsn); err != nil {
			t.Errorf("OUTBOX_RELAY_PG_DSN %q does not parse: %v", dsn, err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, relayBin, "run")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range settings {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env,
		"OUTBOX_RELAY_PG_DSN=postgres://relay@127.0.0.1:1/app?sslmode=disable&connect_timeout=2",
		"OUTBOX_RELAY_KAFKA_BROKERS=127.0.0.1:1",
		"OUTBOX_RELAY_METRICS_ADDR=127.0.0.1:0",
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	_ = cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(stderr.String(), "kafka") {
		t.Errorf("outbox-relay run with these settings: exit %d, want 1 (accepted, no broker)\n%s", code, stderr.String())
	}
}

// ---- release ----

// TestDeployReleaseConfig checks .goreleaser.yaml (which goreleaser itself
// is not here to check): the builds are the Makefile's (static, trimmed,
// the same ldflags) for linux amd64 and arm64, archived and checksummed; and
// CHANGELOG.md has its Unreleased section.
func TestDeployReleaseConfig(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployRoot, ".goreleaser.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Version int `json:"version"`
		Builds  []struct {
			Main    string   `json:"main"`
			Binary  string   `json:"binary"`
			Env     []string `json:"env"`
			Goos    []string `json:"goos"`
			Goarch  []string `json:"goarch"`
			Flags   []string `json:"flags"`
			Ldflags []string `json:"ldflags"`
		} `json:"builds"`
		Archives []map[string]any `json:"archives"`
		Checksum map[string]any   `json:"checksum"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf(".goreleaser.yaml: %v", err)
	}
	if cfg.Version != 2 {
		t.Errorf(".goreleaser.yaml: version %d, want 2", cfg.Version)
	}
	if len(cfg.Builds) != 1 {
		t.Fatalf(".goreleaser.yaml: %d builds, want 1", len(cfg.Builds))
	}
	bd := cfg.Builds[0]
	mk := makeBuildLine(t)
	ldflags := mk[slices.Index(mk, "-ldflags")+1]
	got := strings.Join(bd.Ldflags, " ")
	got = strings.ReplaceAll(got, "{{ .Version }}", strings.TrimPrefix(deployTestVersion, "v"))
	got = strings.ReplaceAll(got, "{{ .FullCommit }}", deployTestCommit)
	if got != ldflags {
		t.Errorf(".goreleaser.yaml ldflags %q, want the Makefile's %q", got, ldflags)
	}
	if bd.Main != "./cmd/outbox-relay" || bd.Binary != "outbox-relay" {
		t.Errorf(".goreleaser.yaml builds main %q binary %q", bd.Main, bd.Binary)
	}
	if !slices.Contains(bd.Env, "CGO_ENABLED=0") || !slices.Contains(bd.Flags, "-trimpath") {
		t.Errorf(".goreleaser.yaml env %q flags %q: want CGO_ENABLED=0 and -trimpath, as make build", bd.Env, bd.Flags)
	}
	if !slices.Equal(bd.Goos, []string{"linux"}) || !slices.Contains(bd.Goarch, "amd64") || !slices.Contains(bd.Goarch, "arm64") {
		t.Errorf(".goreleaser.yaml goos %q goarch %q, want linux amd64 and arm64", bd.Goos, bd.Goarch)
	}
	if len(cfg.Archives) == 0 || len(cfg.Checksum) == 0 {
		t.Error(".goreleaser.yaml: want archives and a checksum")
	}

	cl, err := os.ReadFile(filepath.Join(deployRoot, "CHANGELOG.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(cl, []byte("\n## [Unreleased]\n")) || !bytes.Contains(cl, []byte("\n[Unreleased]: ")) {
		t.Error("CHANGELOG.md: want a \"## [Unreleased]\" section and its link, as Keep a Changelog has them")
	}
}
