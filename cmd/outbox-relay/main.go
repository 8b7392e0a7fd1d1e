// Command outbox-relay publishes committed rows of a PostgreSQL outbox table
// to Kafka, at least once, in commit order per aggregate.
//
// Subcommands: setup (create the table, publication and slot), run (the
// daemon), status (the slot's position and lag), version. Every flag is also
// an environment variable: --pg-dsn is OUTBOX_RELAY_PG_DSN.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	os.Exit(exitCode(err))
}

// exitCode maps run's error to the process exit code: 0 for success or a
// help request, 2 for bad usage, 3 when status finds the slot unusable, 1
// for anything else.
func exitCode(err error) int {
	var ue usageError
	var se statusError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "outbox-relay:", err)
		return 2
	case errors.As(err, &se):
		fmt.Fprintln(os.Stderr, "outbox-relay:", err)
		return 3
	default:
		fmt.Fprintln(os.Stderr, "outbox-relay:", err)
		return 1
	}
}

// usageError reports a command line or configuration the relay cannot use.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }
