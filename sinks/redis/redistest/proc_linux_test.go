package redistest_test

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/outbox-relay/outbox-relay/sinks/redis/redistest"
)

// TestOwnProcessGroup checks that the server runs in a process group other
// than the test's, so that a Ctrl-C in the terminal, which reaches the
// whole foreground process group, does not stop it while its parent still
// needs it; the parent stops it.
func TestOwnProcessGroup(t *testing.T) {
	s, err := redistest.New(redistest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(s.PID()) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ppid pgrp ...; comm may hold spaces.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	pgrp, err := strconv.Atoi(f[2])
	if err != nil {
		t.Fatalf("parse the process group of %q: %v", b, err)
	}
	if pgrp == syscall.Getpgrp() {
		t.Errorf("redis-server %d is in the test's process group %d, want one of its own", s.PID(), pgrp)
	}
}
