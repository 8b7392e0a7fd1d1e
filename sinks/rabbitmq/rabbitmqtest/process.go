package rabbitmqtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// process is a program the Server started: the node's Erlang VM, or epmd.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once it exited and was waited for
	err  error         // Wait's, once done is closed
}

// launch starts path with args and env in dir, its output appended to
// outFile, in a process group of its own, and with SIGKILL as its parent
// death signal on Linux.
func launch(dir, path string, args, env []string, outFile string) (*process, error) {
	out, err := os.OpenFile(outFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = procAttr()
	p := &process{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		defer out.Close()
		// The parent death signal follows the thread that forked, not the
		// process: keep this thread, locked, until the child exits.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// exited reports whether p has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends p SIGTERM and waits for it to exit, then kills whatever it
// left. After timeout it kills p.
func (p *process) stop(timeout time.Duration) error {
	if p.exited() {
		return nil
	}
	kids := descendants(p.cmd.Process.Pid)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("send SIGTERM: %w", err)
	}
	var err error
	select {
	case <-p.done:
	case <-time.After(timeout):
		err = fmt.Errorf("still running %s after SIGTERM; killed it", timeout)
	}
	p.killAll(kids)
	return err
}

// kill kills p, its process group and every process it started, and waits
// for p to exit.
func (p *process) kill() {
	if p.exited() {
		return
	}
	p.killAll(descendants(p.cmd.Process.Pid))
}

// killAll sends SIGKILL to p's process group, to kids, and to p, then waits
// for p. A kid already gone is no error.
func (p *process) killAll(kids []int) {
	pid := p.cmd.Process.Pid
	if !p.exited() {
		_ = syscall.Kill(-pid, syscall.SIGKILL) // the group p leads
		_ = p.cmd.Process.Kill()
	}
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	<-p.done
}
