package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// autogroupFile switches Linux's autogroup scheduling, which shares a busy
// machine's CPU equally between sessions rather than between processes.
// Every PostgreSQL backend makes itself a session leader, so under
// autogroup the walsender gets one backend's share against the
// benchmark's writers: with 8 writers on 2 cores W3's p99 was about 100 ms
// with it on and about 7 ms with it off, the relay's own stages unchanged.
// A server on a machine of its own does not share its CPU with the load.
const autogroupFile = "/proc/sys/kernel/sched_autogroup_enabled"

// setAutogroup turns autogroup scheduling off when off is true and it is on,
// and returns a function that turns it on again. A kernel without
// autogroup, or one the benchmark may not change (not root), is left as it
// is; autogroupState tells the report which was in force.
func setAutogroup(off bool, logf func(string, ...any)) (restore func(), err error) {
	restore = func() {}
	b, err := os.ReadFile(autogroupFile)
	if errors.Is(err, fs.ErrNotExist) {
		return restore, nil
	}
	if err != nil {
		return restore, fmt.Errorf("read %s: %w", autogroupFile, err)
	}
	if !off || strings.TrimSpace(string(b)) != "1" {
		return restore, nil
	}
	if err := os.WriteFile(autogroupFile, []byte("0\n"), 0o644); err != nil {
		logf("autogroup scheduling stays on (%v): W3's tail will show the walsender starved of CPU; run as root, or pass --sched-autogroup=keep to say it is meant", err)
		return restore, nil
	}
	logf("autogroup scheduling turned off for the benchmark (%s); it is turned on again at the end", autogroupFile)
	return func() {
		if err := os.WriteFile(autogroupFile, []byte("1\n"), 0o644); err != nil {
			logf("turn autogroup scheduling on again: %v; run echo 1 > %s", err, autogroupFile)
		}
	}, nil
}

// autogroupState is what the report says of autogroup scheduling: "on",
// "off", or "" when the kernel has none.
func autogroupState() string {
	b, err := os.ReadFile(autogroupFile)
	if err != nil {
		return ""
	}
	if strings.TrimSpace(string(b)) == "1" {
		return "on"
	}
	return "off"
}
