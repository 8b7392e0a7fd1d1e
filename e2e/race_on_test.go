//go:build race

package e2e

// raceEnabled reports whether the test binary runs with the race
// detector, which slows what the test process itself does (kfake, the
// consumers) several times.
const raceEnabled = true
