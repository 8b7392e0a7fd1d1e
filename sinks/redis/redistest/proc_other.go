//go:build !linux

package redistest

import "syscall"

// sysProcAttr returns nothing: without Pdeathsig, only the test's cleanup
// stops the server, so a test binary killed with SIGKILL leaves it running.
func sysProcAttr() *syscall.SysProcAttr { return nil }
