package e2e

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemoStopsCleanlyOnInterrupt runs the demo as `make demo` does, waits
// until events flow and the lag metrics show, then interrupts it as Ctrl-C
// in a terminal does: SIGINT to the whole foreground process group.
func TestDemoStopsCleanlyOnInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped by -short")
	}
	t.Run("binary", func(t *testing.T) {
		bin := filepath.Join(t.TempDir(), "demo")
		if out, err := exec.Command("go", "build", "-o", bin, "./demo").CombinedOutput(); err != nil {
			t.Fatalf("build demo: %v\n%s", err, out)
		}
		out, err := interruptDemo(t, exec.Command(bin, "-relay", relayBin, "-every", "100ms"))
		if err != nil {
			t.Fatalf("demo exited with %v after SIGINT to its process group, want exit status 0:\n%s", err, out)
		}
	})
	t.Run("make", func(t *testing.T) {
		if _, err := exec.LookPath("make"); err != nil {
			t.Skip("no make")
		}
		// -o keeps make from rebuilding the relay under test.
		cmd := exec.Command("make", "-C", "..", "-o", relayBin, "BIN="+relayBin,
			"DEMO_BIN="+filepath.Join(t.TempDir(), "demo"), "DEMO_FLAGS=-every 100ms", "demo")
		out, err := interruptDemo(t, cmd)
		// make ends itself with the SIGINT it was sent once its recipe has
		// ended (the shell reports 130); what must not happen is a failed
		// recipe, which make reports as "make: *** [...] Error 1".
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGINT) {
			t.Errorf("make demo ended with %v after SIGINT, want exit status 0 or make's own SIGINT:\n%s", err, out)
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "make: ***") || strings.HasPrefix(l, "exit status") {
				t.Errorf("make demo printed %q after SIGINT, want the recipe to succeed:\n%s", l, out)
			}
		}
	})
}

// interruptDemo starts cmd in a process group of its own, waits for a
// consumed event and a metrics line, sends SIGINT to the group and returns
// the output and cmd's exit error.
func interruptDemo(t *testing.T, cmd *exec.Cmd) (string, error) {
	t.Helper()
	cmd.Env = append(os.Environ(), "OUTBOX_RELAY_DEMO_METRICS_ADDR="+freeAddr(t))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	killGroup := func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) }
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
	deadline := time.After(120 * time.Second)
	for !(seen["consumer"] && seen["metrics"]) {
		select {
		case l, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				t.Fatalf("demo exited early:\n%s", out.String())
			}
			out.WriteString(l + "\n")
			// Lines read "15:04:05.000 who | text".
			if f := strings.Fields(l); len(f) > 3 && f[2] == "|" && !strings.Contains(l, "not yet") {
				seen[f[1]] = true
			}
		case <-deadline:
			killGroup()
			t.Fatalf("no consumed event and lag metrics within 120s:\n%s", out.String())
		}
	}
	if err := syscall.Kill(-pgid, syscall.SIGINT); err != nil {
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
	case err = <-done:
	case <-time.After(60 * time.Second):
		killGroup()
		<-done
		t.Fatalf("demo still running 60s after SIGINT:\n%s", out.String())
	}
	for _, want := range []string{"relay exited cleanly", "PostgreSQL stopped and its data removed", "replication_lag_bytes="} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	return out.String(), err
}
