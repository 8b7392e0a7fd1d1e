package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// serverUser returns the credential the server binaries run with: nil, meaning
// the current user, unless the process runs as root, which initdb and postgres
// refuse; then the postgres user's.
func serverUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL must run as user postgres: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse uid %q of user postgres: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse gid %q of user postgres: %w", u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// chownAll hands dir and everything in it to cred's user; nil cred does
// nothing.
func chownAll(dir string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	return filepath.WalkDir(dir, func(path string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(cred.Uid), int(cred.Gid))
	})
}

// command returns a command running the program name from c's binary
// directory as the server's user, in c's directory, with an environment free
// of PG* variables, which would otherwise redirect the tools to another server.
func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, name), args...)
	cmd.Dir = c.dir
	cmd.Env = cleanEnv()
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
		// The server's user cannot read root's home directory.
		cmd.Env = append(cmd.Env, "HOME="+c.dir)
	}
	return cmd
}

// run runs the program name from c's binary directory as command does, and
// returns a *commandError holding its output if it fails.
func (c *Cluster) run(ctx context.Context, name string, args ...string) error {
	cmd := c.command(ctx, name, args...)
	// pg_ctl start leaves the postmaster running; should it ever keep the
	// output pipe open, do not wait for it.
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return &commandError{args: append([]string{name}, args...), output: string(out), err: err}
	}
	return nil
}

// cleanEnv returns the process environment without PG* variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// commandError is a server program that failed, with what it printed.
type commandError struct {
	args   []string
	output string
	err    error
}

func (e *commandError) Error() string {
	msg := strings.Join(e.args, " ") + ": " + e.err.Error()
	if out := strings.TrimSpace(e.output); out != "" {
		msg += "\n" + out
	}
	return msg
}

func (e *commandError) Unwrap() error { return e.err }
