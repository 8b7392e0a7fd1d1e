package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDemoStopsCleanlyOnInterrupt runs the demo, waits until events flow
// and the lag metrics show, then interrupts it as Ctrl-C in a terminal does:
// the kernel sends SIGINT to the terminal's whole foreground process group.
func TestDemoStopsCleanlyOnInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped by -short")
	}
	t.Parallel()
	t.Run("binary", func(t *testing.T) {
		bin := filepath.Join(t.TempDir(), "demo")
		if out, err := exec.Command("go", "build", "-o", bin, "../cmd/outbox-relay-demo").CombinedOutput(); err != nil {
			t.Fatalf("build demo: %v\n%s", err, out)
		}
		out, err := interruptDemo(t, exec.Command(bin, "-relay", relayBin, "-every", "100ms"), false)
		if err != nil {
			t.Fatalf("demo exited with %v after SIGINT to its process group, want exit status 0:\n%s", err, out)
		}
	})
	t.Run("make", func(t *testing.T) {
		if _, err := exec.LookPath("make"); err != nil {
			t.Skip("no make")
		}
		// A shell owns the terminal, as a user's does, and runs make in its
		// foreground; once make is done it reports its own process group and
		// the terminal's foreground process group, which must be the same
		// again. -o keeps make from rebuilding the relay under test.
		const script = `make "$@"; st=$?; set -- $(cat /proc/$$/stat); echo "shell: pgrp=$5 foreground=$8"; exit $st`
		cmd := exec.Command("/bin/sh", "-c", script, "sh", "-C", "..", "-o", relayBin, "BIN="+relayBin,
			"DEMO_BIN="+filepath.Join(t.TempDir(), "demo"), "DEMO_FLAGS=-every 100ms", "demo")
		out, err := interruptDemo(t, cmd, true)
		if err != nil {
			t.Errorf("make demo in a terminal ended with %v after Ctrl-C, want exit status 0:\n%s", err, out)
		}
		var pgrp, fg int
		for _, l := range strings.Split(out, "\n") {
			l = strings.TrimSpace(l)
			if strings.HasPrefix(l, "make: ***") || strings.HasPrefix(l, "exit status") {
				t.Errorf("make demo printed %q after Ctrl-C, want the recipe to succeed:\n%s", l, out)
			}
			if _, err := fmt.Sscanf(l, "shell: pgrp=%d foreground=%d", &pgrp, &fg); err == nil && pgrp != fg {
				t.Errorf("after make demo, the terminal's foreground process group is %d, want the shell's, %d:\n%s", fg, pgrp, out)
			}
		}
		if pgrp == 0 {
			t.Errorf("the shell running make demo did not report its process group after Ctrl-C:\n%s", out)
		}
	})
}

// TestDemoSinks runs the demo with each broker other than Kafka (which
// TestDemoStopsCleanlyOnInterrupt runs) for a few seconds and checks that
// it exits 0 by itself, having committed events and consumed every one of
// them with the broker's own client. The redis-server and the RabbitMQ
// node the demo starts are child processes, which must be gone once the
// demo has exited; the demo is also interrupted with redis-server, as
// Ctrl-C does. Without redis-server or rabbitmq-server the demo says what
// to install, before it starts anything else.
func TestDemoSinks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped by -short")
	}
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "demo")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/outbox-relay-demo").CombinedOutput(); err != nil {
		t.Fatalf("build demo: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		sink string
		// duration is the demo's -duration: shorter for RabbitMQ, whose
		// start takes 4 to 10 seconds.
		duration string
		// consumed is how a consumed event reads, after the destination.
		consumed *regexp.Regexp
		// prepared, if set, is what the demo says once the broker holds
		// what the consumer reads, which must come before the writer's
		// first line: RabbitMQ drops what reaches no queue.
		prepared string
	}{
		{sink: "nats", duration: "4s", consumed: regexp.MustCompile(`\| outbox\.order\.order-\d seq=\d+ key=order-\d \w+ +position=[0-9a-f]{24} value=\{`)},
		{sink: "rabbitmq", duration: "2s", consumed: regexp.MustCompile(`\| outbox/order\.\w+ tag=\d+ key=order-\d \w+ +position=[0-9a-f]{24} value=\{`),
			prepared: "durable queue outbox-relay-demo bound to exchange outbox with binding key #"},
		{sink: "redis", duration: "4s", consumed: regexp.MustCompile(`\| outbox\.order id=\d+-\d+ key=order-\d \w+ +position=[0-9a-f]{24} value=\{`)},
	} {
		t.Run(tc.sink, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-relay", relayBin, "-sink", tc.sink, "-every", "100ms", "-duration", tc.duration)
			cmd.Env = append(os.Environ(), "OUTBOX_RELAY_DEMO_METRICS_ADDR="+freeAddr(t))
			b, err := cmd.CombinedOutput()
			out := string(b)
			if err != nil {
				t.Fatalf("demo -sink %s -duration %s exited with %v, want exit status 0:\n%s", tc.sink, tc.duration, err, out)
			}
			for _, want := range []string{"relay exited cleanly", "PostgreSQL stopped and its data removed", tc.sink + " broker stopped and its data removed", "--sink=" + tc.sink} {
				if !strings.Contains(out, want) {
					t.Errorf("demo output lacks %q:\n%s", want, out)
				}
			}
			if !tc.consumed.MatchString(out) {
				t.Errorf("demo output has no consumed event like %s:\n%s", tc.consumed, out)
			}
			if tc.prepared != "" {
				if i, w := strings.Index(out, tc.prepared), strings.Index(out, " writer "); i < 0 || w < 0 || w < i {
					t.Errorf("demo output lacks %q before the writer's first line:\n%s", tc.prepared, out)
				}
			}
			checkDemoCounts(t, out)
			checkGone(t, out)
		})
	}
	t.Run("no redis-server", func(t *testing.T) {
		cmd := exec.Command(bin, "-relay", relayBin, "-sink", "redis")
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "OUTBOX_RELAY_REDIS_SERVER=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, "PATH="+t.TempDir())
		checkMissingServer(t, cmd, "redis", "redis-server")
	})
	t.Run("no rabbitmq-server", func(t *testing.T) {
		cmd := exec.Command(bin, "-relay", relayBin, "-sink", "rabbitmq")
		cmd.Env = append(os.Environ(), "OUTBOX_RELAY_RABBITMQ_BINDIR="+t.TempDir())
		checkMissingServer(t, cmd, "rabbitmq", "rabbitmq-server")
	})
	t.Run("redis interrupted", func(t *testing.T) {
		out, err := interruptDemo(t, exec.Command(bin, "-relay", relayBin, "-sink", "redis", "-every", "100ms"), false)
		if err != nil {
			t.Fatalf("demo -sink redis exited with %v after SIGINT to its process group, want exit status 0:\n%s", err, out)
		}
		checkDemoCounts(t, out)
		checkGone(t, out)
	})
}

// demoCounts is the demo's last report of what it wrote and read.
var demoCounts = regexp.MustCompile(`committed (\d+) events \((\d+) rolled back, never published\); consumed (\d+)`)

// checkDemoCounts checks that the demo committed events and consumed at
// least as many (delivery is at least once).
func checkDemoCounts(t *testing.T, out string) {
	t.Helper()
	m := demoCounts.FindStringSubmatch(out)
	if m == nil {
		t.Errorf("demo output lacks its counts (%s):\n%s", demoCounts, out)
		return
	}
	committed, _ := strconv.Atoi(m[1])
	consumed, _ := strconv.Atoi(m[3])
	if committed == 0 || consumed < committed {
		t.Errorf("demo committed %d events and consumed %d, want some committed and every one consumed:\n%s", committed, consumed, out)
	}
}

// redisPID reads the pid of the redis-server the demo started.
var redisPID = regexp.MustCompile(`redis-server \(pid (\d+)`)

// rabbitmqNode reads the name and the pid (its Erlang VM's) of the
// RabbitMQ node the demo started.
var rabbitmqNode = regexp.MustCompile(`rabbitmq-server node (\S+) \(pid (\d+)`)

// checkGone checks that the redis-server or the RabbitMQ node the demo
// reports starting, if any, no longer runs: for RabbitMQ, no beam.smp
// runs with the node's name in its environment.
func checkGone(t *testing.T, out string) {
	t.Helper()
	if m := redisPID.FindStringSubmatch(out); m != nil {
		pid, _ := strconv.Atoi(m[1])
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("redis-server %d after the demo exited: kill -0 gives %v, want no such process", pid, err)
		}
	}
	if m := rabbitmqNode.FindStringSubmatch(out); m != nil {
		pid, _ := strconv.Atoi(m[2])
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("RabbitMQ node %s (pid %d) after the demo exited: kill -0 gives %v, want no such process", m[1], pid, err)
		}
		if left := beamsOf(t, m[1]); len(left) > 0 {
			t.Errorf("beam.smp of RabbitMQ node %s still runs after the demo exited: pids %v", m[1], left)
		}
	}
}

// beamsOf returns the pids of the beam.smp processes (Erlang VMs) whose
// environment names the RabbitMQ node node, read from /proc.
func beamsOf(t *testing.T, node string) []int {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, d := range dirs {
		comm, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "beam.smp" {
			continue // gone meanwhile, or another program
		}
		environ, err := os.ReadFile(filepath.Join(d, "environ"))
		if err != nil {
			continue
		}
		if slices.Contains(strings.Split(string(environ), "\x00"), "RABBITMQ_NODENAME="+node) {
			pid, _ := strconv.Atoi(filepath.Base(d))
			pids = append(pids, pid)
		}
	}
	return pids
}

// interruptDemo starts cmd, waits for a consumed event and a metrics line,
// interrupts it as Ctrl-C does and returns the output and cmd's exit error.
// With tty false, cmd runs in a process group of its own with its output on
// a pipe, and the interrupt is SIGINT to that group. With tty true, cmd runs
// in a new session whose controlling terminal is a new pseudo-terminal, as a
// login shell does, and the interrupt is Ctrl-C typed into the terminal; the
// kernel then sends SIGINT to the terminal's foreground process group.
func interruptDemo(t *testing.T, cmd *exec.Cmd, tty bool) (string, error) {
	t.Helper()
	cmd.Env = append(os.Environ(), "OUTBOX_RELAY_DEMO_METRICS_ADDR="+freeAddr(t))
	var (
		output    io.Reader
		interrupt func() error
		term      *os.File
		slave     *os.File
	)
	if tty {
		term, slave = openPTY(t)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		output = term
		interrupt = func() error { _, err := term.Write([]byte{0x03}); return err } // ^C
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = cmd.Stdout
		output = stdout
		interrupt = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) }
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if slave != nil {
		slave.Close() // only cmd and its children hold it now
	}
	killAll := func() {
		if term != nil { // the group the demo may have moved to
			if fg, err := ptyForeground(term); err == nil && fg > 1 {
				_ = syscall.Kill(-fg, syscall.SIGKILL)
			}
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		// A pseudo-terminal reads as EIO once no process holds its other end.
		sc := bufio.NewScanner(output)
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
			killAll()
			t.Fatalf("no consumed event and lag metrics within 120s:\n%s", out.String())
		}
	}
	if err := interrupt(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for l := range lines {
			out.WriteString(l + "\n")
		}
		done <- cmd.Wait()
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		killAll()
		<-done
		t.Fatalf("demo still running 60s after Ctrl-C:\n%s", out.String())
	}
	for _, want := range []string{"relay exited cleanly", "PostgreSQL stopped and its data removed", "replication_lag_bytes="} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	return out.String(), err
}

// openPTY opens a new pseudo-terminal and returns its controlling end and
// its terminal end, which a child takes as its controlling terminal. Both
// are closed when t ends.
func openPTY(t *testing.T) (term, slave *os.File) {
	t.Helper()
	term, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { term.Close() })
	var n int
	if err := control(term, func(fd int) (err error) {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil { // unlockpt
			return err
		}
		n, err = unix.IoctlGetInt(fd, unix.TIOCGPTN) // ptsname
		return err
	}); err != nil {
		t.Fatalf("set up %s: %v", term.Name(), err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { slave.Close() })
	return term, slave
}

// ptyForeground returns the foreground process group of the pseudo-terminal
// whose controlling end is term.
func ptyForeground(term *os.File) (pgid int, err error) {
	err = control(term, func(fd int) (err error) {
		pgid, err = unix.IoctlGetInt(fd, unix.TIOCGPGRP)
		return err
	})
	return pgid, err
}

// control runs f on f's file descriptor without making it blocking, as
// (*os.File).Fd would.
func control(file *os.File, f func(fd int) error) error {
	rc, err := file.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// checkMissingServer runs the demo cmd, for sink, on a machine without
// the broker's server program: it must exit 1 saying which package to
// install, before it starts PostgreSQL.
func checkMissingServer(t *testing.T, cmd *exec.Cmd, sink, server string) {
	t.Helper()
	b, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("demo -sink %s without %s exited with %v, want exit status 1:\n%s", sink, server, err, b)
	}
	if want := "install the " + server + " package, or use -sink kafka"; !strings.Contains(string(b), want) {
		t.Errorf("demo -sink %s without %s does not say %q:\n%s", sink, server, want, b)
	}
	if strings.Contains(string(b), "PostgreSQL") {
		t.Errorf("demo -sink %s without %s started PostgreSQL first:\n%s", sink, server, b)
	}
}
