package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// takeForeground moves the demo into a process group of its own and makes
// that group the foreground process group of its controlling terminal, the
// terminal on tty, as a job-control shell does for a job it starts. It
// returns a function that gives the foreground back to the group the demo
// started in; call it once, last, on every path out of run.
//
// Why: Ctrl-C sends SIGINT to the whole foreground process group. Under
// `make demo` that group holds make too, and make, after its recipe ends,
// always kills itself with the SIGINT it received, so make exits 130 even
// when the demo stopped cleanly and exited 0. With the demo alone in the
// foreground, Ctrl-C reaches only the demo (and a short-lived `outbox-relay
// setup`, if still running); make sees its recipe succeed and exits 0. The
// relay runs in its own process group and PostgreSQL in its own session
// (pg_ctl puts it there), so neither is reached by Ctrl-C: the demo stops
// both itself.
//
// SIGTTOU is ignored while the foreground changes hands, as the kernel
// stops a background process that changes it otherwise, and stays ignored
// after the hand-back so that the demo's last words, written from a
// background group, print even under `stty tostop`. SIGTSTP (Ctrl-Z) is
// ignored while the demo holds the foreground: it would stop only the demo,
// which neither make nor the shell waits for as a job, and leave the
// terminal frozen.
//
// takeForeground changes nothing, and returns a restore that does nothing,
// when tty is not the demo's controlling terminal (standard input is a file,
// a pipe or /dev/null, as under tests and CI), when the demo is not in the
// terminal's foreground (`make demo &`), or when it already leads its own
// process group (started by a job-control shell directly). On an error it
// undoes what it did.
func takeForeground(tty *os.File) (restore func() error, err error) {
	nothing := func() error { return nil }
	fd := int(tty.Fd())
	fg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	if err != nil { // not a terminal, or not ours
		return nothing, nil
	}
	orig, pid := unix.Getpgrp(), unix.Getpid()
	if fg != orig || orig == pid {
		return nothing, nil
	}

	signal.Ignore(syscall.SIGTTOU)
	defer signal.Reset(syscall.SIGTTOU)
	if err := unix.Setpgid(0, 0); err != nil {
		return nothing, fmt.Errorf("setpgid: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, pid); err != nil {
		return nothing, errors.Join(
			fmt.Errorf("make process group %d the foreground of %s: %w", pid, tty.Name(), err),
			unix.Setpgid(0, orig))
	}
	signal.Ignore(syscall.SIGTSTP)
	return func() error {
		signal.Ignore(syscall.SIGTTOU)
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, orig); err != nil {
			return fmt.Errorf("give the foreground of %s back to process group %d: %w", tty.Name(), orig, err)
		}
		return nil
	}, nil
}
