package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemoStopsCleanlyOnInterrupt runs what `make demo` runs, waits until
// events flow and the lag metrics show, then interrupts it as Ctrl-C would.
func TestDemoStopsCleanlyOnInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped by -short")
	}
	bin := filepath.Join(t.TempDir(), "demo")
	if out, err := exec.Command("go", "build", "-o", bin, "./demo").CombinedOutput(); err != nil {
		t.Fatalf("build demo: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-relay", relayBin, "-every", "100ms")
	cmd.Env = append(os.Environ(), "OUTBOX_RELAY_DEMO_METRICS_ADDR="+freeAddr(t))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var out strings.Builder
	seen := map[string]bool{}
	deadline := time.After(90 * time.Second)
	for !(seen["consumer"] && seen["metrics"]) {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("demo exited early:\n%s", out.String())
			}
			out.WriteString(l + "\n")
			// Lines read "15:04:05.000 who | text".
			if f := strings.Fields(l); len(f) > 3 && f[2] == "|" && !strings.Contains(l, "not yet") {
				seen[f[1]] = true
			}
		case <-deadline:
			_ = cmd.Process.Kill()
			t.Fatalf("no consumed event and lag metrics within 90s:\n%s", out.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for l := range lines {
			out.WriteString(l + "\n")
		}
		done <- cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo exited with %v after SIGINT:\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("demo still running 60s after SIGINT:\n%s", out.String())
	}
	for _, want := range []string{"relay exited cleanly", "PostgreSQL stopped and its data removed", "replication_lag_bytes="} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
