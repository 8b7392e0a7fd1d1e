package redistest

import "syscall"

// sysProcAttr makes the kernel kill the server when the thread that started
// it ends; Go never ends the threads of goroutines that did not lock them,
// so that is when the test binary exits, however it exits.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
