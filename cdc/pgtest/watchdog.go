package pgtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// watchdogScript waits for end of file on standard input, then stops the
// server in $1 at once with pg_ctl ($0) and removes $1.
const watchdogScript = `read _; "$0" stop -D "$1" -m immediate -w -t 60 >/dev/null 2>&1; rm -rf "$1"`

// A watchdog is a shell that stops a cluster and removes its directory when
// its standard input, a pipe whose only writer is this process, reaches end of
// file: when close closes the pipe, or when this process exits in any way.
// It runs in its own process group, so a Ctrl-C meant for the tests does not
// kill it first.
type watchdog struct {
	cmd  *exec.Cmd
	pipe *os.File
}

// startWatchdog starts a watchdog for c.
func startWatchdog(c *Cluster) (*watchdog, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, filepath.Join(c.binDir, "pg_ctl"), c.dir)
	cmd.Stdin = r
	cmd.Dir = "/"
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: c.cred}
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	return &watchdog{cmd: cmd, pipe: w}, nil
}

// close makes the watchdog stop the server and remove its directory, and
// waits until it has.
func (w *watchdog) close() error {
	w.pipe.Close()
	if err := w.cmd.Wait(); err != nil {
		return fmt.Errorf("watchdog: %w", err)
	}
	return nil
}
