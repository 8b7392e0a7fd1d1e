//go:build !linux

package rabbitmqtest

import "syscall"

// procAttr puts a started program in a process group of its own, so that a
// Ctrl-C meant for the tests does not reach it first and its group can be
// killed at once. Only Linux also kills it when the test process dies.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// descendants returns nothing: only Linux has /proc to read them from; the
// process group is killed instead.
func descendants(int) []int { return nil }
