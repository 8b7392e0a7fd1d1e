package main

import (
	"bufio"
	"context"
	"errors"
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
	"time"
)

// process is a child program: the relay or bench/broker.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited
	err  error         // from Wait, set before done closes
	log  *tail
}

// start starts cmd in a process group of its own, so that a Ctrl-C in the
// terminal reaches it only through us, collecting the last lines of its
// standard error.
func start(name string, cmd *exec.Cmd) (*process, error) {
	p := &process{name: name, cmd: cmd, done: make(chan struct{}), log: &tail{max: 40}}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = p.log
	// A wrapper script whose child outlives it would otherwise keep Wait
	// waiting for the end of the output.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exitError describes how the process ended, with its last log lines.
func (p *process) exitError() error {
	return fmt.Errorf("%s exited early (%v); last lines of its log:\n%s", p.name, p.err, p.log.String())
}

// stop sends SIGTERM and waits up to timeout, then kills the process.
func (p *process) stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s still running %s after SIGTERM; killed it", p.name, timeout)
	}
}

// kill ends the process at once; for error paths.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// clockTick is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports.
const clockTick = 100

// cpuSeconds returns the user plus system CPU time the process pid has
// used, from /proc/PID/stat.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields are
	// counted after its closing parenthesis, from field 3 (state).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return float64(utime+stime) / clockTick, nil
}

// peakRSS returns VmHWM, the process's peak resident set, in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmHWM %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// cpuTimes is the machine's CPU time from /proc/stat, in ticks: all of
// it, and the part spent busy (neither idle nor waiting for I/O).
type cpuTimes struct{ total, busy int64 }

// machineCPU reads /proc/stat; zero if it cannot.
func machineCPU() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return cpuTimes{}
	}
	var t cpuTimes
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i >= 8 { // guest time is already in user time
			break
		}
		t.total += n
		if i != 3 && i != 4 { // idle, iowait
			t.busy += n
		}
	}
	return t
}

// busySince returns the share of the machine's CPU time busy since t, from
// 0 to 1, or -1 if unknown.
func (t cpuTimes) busySince() float64 {
	now := machineCPU()
	if t.total == 0 || now.total <= t.total {
		return -1
	}
	return float64(now.busy-t.busy) / float64(now.total-t.total)
}

// cpuWatch keeps the last CPU time read of a process that may exit at any
// moment (a walsender), reading it every few milliseconds.
type cpuWatch struct {
	mu   sync.Mutex
	pid  int
	last float64
}

func (w *cpuWatch) observe(pid int) {
	if pid == 0 {
		return
	}
	s, err := cpuSeconds(pid)
	if err != nil {
		return
	}
	w.mu.Lock()
	if w.pid != pid {
		w.pid = pid
	}
	w.last = s
	w.mu.Unlock()
}

// seconds returns the last reading, or -1 if none succeeded.
func (w *cpuWatch) seconds() float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pid == 0 {
		return -1
	}
	return w.last
}

// tail keeps the last max lines written to it.
type tail struct {
	mu    sync.Mutex
	max   int
	lines []string
	part  []byte
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.part = append(t.part, b...)
	for {
		i := strings.IndexByte(string(t.part), '\n')
		if i < 0 {
			break
		}
		t.lines = append(t.lines, string(t.part[:i]))
		t.part = t.part[i+1:]
		if len(t.lines) > t.max {
			t.lines = t.lines[len(t.lines)-t.max:]
		}
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(append(t.lines, string(t.part)), "\n")
}

// freeAddr returns a 127.0.0.1 address that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// brokerBinary returns bin, or builds bench/broker into dir.
func brokerBinary(ctx context.Context, bin, dir string) (string, error) {
	if bin != "" {
		return filepath.Abs(bin)
	}
	out := filepath.Join(dir, "broker")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/outbox-relay/outbox-relay/bench/broker")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build bench/broker (or pass --broker-bin): %w\n%s", err, b)
	}
	return out, nil
}

// startBroker starts the broker program with args and returns it with the
// address it prints.
func startBroker(ctx context.Context, bin string, args ...string) (*process, string, error) {
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	p, err := start("broker", cmd)
	if err != nil {
		return nil, "", err
	}
	addr := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		addr <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case a := <-addr:
		if a == "" {
			p.kill()
			return nil, "", p.exitError()
		}
		return p, a, nil
	case <-time.After(30 * time.Second):
		p.kill()
		return nil, "", fmt.Errorf("broker printed no address in 30s:\n%s", p.log.String())
	case <-ctx.Done():
		p.kill()
		return nil, "", ctx.Err()
	}
}
