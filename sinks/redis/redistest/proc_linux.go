package redistest

import "syscall"

// sysProcAttr makes the kernel kill the server when the thread that started
// it ends; Go never ends the threads of goroutines that did not lock them,
// so that is when the test binary (or the program that called New) exits,
// however it exits. The server also gets a process group of its own, so
// that a Ctrl-C typed in a terminal, which reaches the whole foreground
// process group, reaches only its parent, which decides when the server
// stops: a program draining its clients after Ctrl-C still has its server.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
