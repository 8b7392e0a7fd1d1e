package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"
)

// run parses args and runs the subcommand they name. It owns every
// goroutine the relay starts and returns when they have all ended.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	opts := []ff.Option{ff.WithEnvVarPrefix(envPrefix)}
	// Parsing writes to a flag set's output the error and the command's
	// whole usage (over 200 lines for run), or the usage alone for -h:
	// parseErr prints the usage for -h only.
	outs := map[*flag.FlagSet]*bytes.Buffer{}
	newFS := func(name string) *flag.FlagSet {
		fs := flag.NewFlagSet(strings.TrimSpace("outbox-relay "+name), flag.ContinueOnError)
		outs[fs] = new(bytes.Buffer)
		fs.SetOutput(outs[fs])
		return fs
	}

	var runCfg Config
	runFS := newFS("run")
	bindRun(runFS, &runCfg)

	var setupCfg Config
	var dryRun bool
	setupFS := newFS("setup")
	bindDatabase(setupFS, &setupCfg)
	bindSink(setupFS, &setupCfg)
	bindNATS(setupFS, &setupCfg)
	bindRabbitMQ(setupFS, &setupCfg)
	bindRedis(setupFS, &setupCfg)
	setupFS.BoolVar(&dryRun, "dry-run", false, "print the SQL setup may run, and run nothing")

	var replayCfg Config
	var replayOpts replayFlags
	replayFS := newFS("replay")
	bindReplay(replayFS, &replayCfg, &replayOpts)

	var statusCfg Config
	var asJSON bool
	statusFS := newFS("status")
	bindDatabase(statusFS, &statusCfg)
	statusFS.BoolVar(&asJSON, "json", false, "print JSON instead of a table")

	var root *ffcli.Command
	var probeAddr, probePath string
	probeFS := newFS("healthcheck")
	probeFS.StringVar(&probeAddr, "metrics-addr", defaultMetricsAddr, "the relay's metrics address")
	probeFS.StringVar(&probePath, "path", "/healthz", "endpoint to check: /healthz or /readyz")

	root = &ffcli.Command{
		Name:       "outbox-relay",
		ShortUsage: "outbox-relay <setup|run|replay|status|prune|dlq|healthcheck|version> [flags]",
		ShortHelp:  "Publish committed outbox rows from PostgreSQL to Kafka.",
		LongHelp:   "Every flag is also an environment variable: --pg-dsn is OUTBOX_RELAY_PG_DSN. A flag beats the environment.",
		FlagSet:    newFS(""),
		UsageFunc:  usage,
		Subcommands: []*ffcli.Command{
			{
				Name:       "setup",
				ShortUsage: "outbox-relay setup [flags]",
				ShortHelp:  "Create the outbox table (if missing), its publication and the replication slot, and what --sink needs on its broker (NATS streams, a RabbitMQ exchange and dead-letter queue). Idempotent.",
				FlagSet:    setupFS,
				UsageFunc:  usage,
				Options:    opts,
				Exec: func(ctx context.Context, _ []string) error {
					if err := setupCfg.finish(); err != nil && !(dryRun && setupCfg.CDC.DSN == "") {
						return err
					}
					setupCfg.unusedSinkFlags = sinkFlagsUnused(setupFS, setupCfg.Sink)
					return withHint(setup(ctx, setupCfg, dryRun, stdout, stderr), setupCfg)
				},
			},
			{
				Name:       "run",
				ShortUsage: "outbox-relay run [flags]",
				ShortHelp:  "Relay committed outbox rows to Kafka until SIGTERM or SIGINT.",
				FlagSet:    runFS,
				UsageFunc:  usage,
				Options:    opts,
				Exec: func(ctx context.Context, _ []string) error {
					if err := runCfg.finishRun(); err != nil {
						return err
					}
					runCfg.unusedSinkFlags = sinkFlagsUnused(runFS, runCfg.Sink)
					return withHint(relayUntilDone(ctx, runCfg, stderr), runCfg)
				},
			},
			{
				Name:       "replay",
				ShortUsage: "outbox-relay replay --since <time|event id> [--until <time|event id>] [--aggregate-type T] [--rate N/s] [--dry-run] [flags]",
				ShortHelp:  "Publish rows still in the outbox table to Kafka again, as run would, with the header replayed=true.",
				FlagSet:    replayFS,
				UsageFunc:  usage,
				Options:    opts,
				Exec: func(ctx context.Context, _ []string) error {
					if err := replayCfg.finishRun(); err != nil {
						return err
					}
					return withHint(replay(ctx, replayCfg, replayOpts, stdout, stderr), replayCfg)
				},
			},
			{
				Name:       "status",
				ShortUsage: "outbox-relay status [--json] [flags]",
				ShortHelp:  "Show the slot's confirmed position, lag and state; exit 3 when it is missing or invalidated.",
				FlagSet:    statusFS,
				UsageFunc:  usage,
				Options:    opts,
				Exec: func(ctx context.Context, _ []string) error {
					if err := statusCfg.finish(); err != nil {
						return err
					}
					return withHint(status(ctx, statusCfg, asJSON, stdout), statusCfg)
				},
			},
			newPruneCommand(newFS, opts, stdout),
			newDLQCommand(newFS, opts, stdout, stderr),
			{
				Name:       "healthcheck",
				ShortUsage: "outbox-relay healthcheck [--path /readyz]",
				ShortHelp:  "Exit 0 if the local relay's /healthz (or --path) answers 200; for container health checks.",
				FlagSet:    probeFS,
				UsageFunc:  usage,
				Options:    opts,
				Exec: func(ctx context.Context, _ []string) error {
					return healthcheck(ctx, probeAddr, probePath, stdout)
				},
			},
			{
				Name:       "version",
				ShortUsage: "outbox-relay version",
				ShortHelp:  "Print the version, commit and Go version.",
				FlagSet:    newFS("version"),
				UsageFunc:  usage,
				Exec: func(context.Context, []string) error {
					fmt.Fprintln(stdout, versionString())
					return nil
				},
			},
		},
		Exec: func(context.Context, []string) error {
			fmt.Fprintln(stderr, usage(root))
			names := make([]string, len(root.Subcommands))
			for i, c := range root.Subcommands {
				names[i] = c.Name
			}
			last := len(names) - 1
			return usageError{fmt.Errorf("name a subcommand: %s or %s", strings.Join(names[:last], ", "), names[last])}
		},
	}
	refuseArgs(root, "")
	if err := parseErr(root.Parse(args), outs, stderr); err != nil {
		return err
	}
	return root.Run(ctx)
}

// parseErr returns the error of parsing the command line and the
// environment, err, as run reports it, given what parsing wrote to each
// flag set's output, outs. For -h it prints the usage and returns
// flag.ErrHelp. For a flag the command does not have, or a flag's or an
// environment variable's bad value, it returns the error naming the
// command, what the value should be and how to list its flags, without
// the usage that would bury it. Flag sets write to stderr afterwards.
func parseErr(err error, outs map[*flag.FlagSet]*bytes.Buffer, stderr io.Writer) error {
	defer func() {
		for fs := range outs {
			fs.SetOutput(stderr)
		}
	}()
	if err == nil {
		return nil
	}
	if errors.Is(err, flag.ErrHelp) {
		for _, out := range outs {
			if out.Len() > 0 {
				_, _ = io.Copy(stderr, out)
			}
		}
		return err
	}
	fs := lastParsed(outs)
	if fs == nil {
		return usageError{err}
	}
	if inner := errors.Unwrap(err); inner != nil {
		err = inner // without ff's "error parsing commandline arguments: "
	}
	err = fmt.Errorf("%w; %s -h lists its flags", explainValue(fs, err), fs.Name())
	if sub := strings.TrimPrefix(fs.Name(), "outbox-relay "); sub != fs.Name() {
		err = fmt.Errorf("%s: %w", sub, err) // printed after "outbox-relay: "
	}
	return usageError{err}
}

// lastParsed returns the flag set of the command that parsing reached:
// commands parse their flags, then the environment, after their parent's,
// and a set's name holds its parent's.
func lastParsed(outs map[*flag.FlagSet]*bytes.Buffer) *flag.FlagSet {
	var last *flag.FlagSet
	for fs := range outs {
		if fs.Parsed() && (last == nil || len(fs.Name()) > len(last.Name())) {
			last = fs
		}
	}
	return last
}

var (
	// badFlagValue matches the flag package's errors for a bad value,
	// whose cause is the bare "parse error" or "value out of range".
	badFlagValue = regexp.MustCompile(`^(invalid (?:boolean )?value "(?s:.*)" for (?:flag )?-([^:]+)): (parse error|value out of range)$`)
	// badEnvValue matches ff's error for an environment variable's value.
	badEnvValue = regexp.MustCompile(`^error setting flag "([^"]+)" from environment variable "([^"]+)": (?s:(.*))$`)
)

// explainValue rewrites the error of a flag's or an environment variable's
// value that fs refused so that it says what the value should be, where
// the flag package says only "parse error". It shows an environment
// variable's value only then, when the flag is a number, a duration or a
// boolean, never a secret; other errors keep their own words.
func explainValue(fs *flag.FlagSet, err error) error {
	msg := err.Error()
	if m := badFlagValue.FindStringSubmatch(msg); m != nil {
		if want := valueKind(fs.Lookup(m[2]), m[3]); want != "" {
			return fmt.Errorf("%s: %s", m[1], want)
		}
		return err
	}
	m := badEnvValue.FindStringSubmatch(msg)
	if m == nil {
		return err
	}
	name, env, cause := m[1], m[2], m[3]
	if want := valueKind(fs.Lookup(name), cause); want != "" {
		return fmt.Errorf("invalid value %q in %s (flag -%s): %s", os.Getenv(env), env, name, want)
	}
	return fmt.Errorf("%s (flag -%s): %s", env, name, cause)
}

// valueKind says what f takes, given the flag package's cause of refusing
// a value, when f is one of its numbers, durations or booleans; it is
// empty for any other flag or cause.
func valueKind(f *flag.Flag, cause string) string {
	if f == nil || (cause != "parse error" && cause != "value out of range") {
		return ""
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return ""
	}
	if cause == "value out of range" {
		return "value out of range"
	}
	switch g.Get().(type) {
	case bool:
		return "want true or false"
	case time.Duration:
		return "want a duration such as 500ms, 5s or 1m30s"
	case int, int64, uint, uint64:
		return "want a whole number"
	case float64:
		return "want a number"
	}
	return ""
}

// refuseArgs makes c and its subcommands refuse the words their flags left
// over. Flag parsing stops at the first word that is not a flag, so a
// stray word (a boolean flag's value given apart, as in --create-slot
// true) would leave every flag after it unread, and the command would run
// without them.
func refuseArgs(c *ffcli.Command, path string) {
	exec := c.Exec
	name := strings.TrimSpace(path + " " + c.Name)
	c.Exec = func(ctx context.Context, args []string) error {
		switch {
		case len(args) == 0:
			return exec(ctx, args)
		case len(c.Subcommands) > 0:
			return usageError{fmt.Errorf("unknown subcommand %q; see %s -h", args[0], name)}
		default:
			// The error is printed after "outbox-relay: ".
			sub := strings.TrimPrefix(name, "outbox-relay ")
			how := "give each value its own flag: --id a --id b, or --id a,b where the flag says so"
			if _, err := strconv.ParseBool(args[0]); err == nil {
				how = "give a boolean flag's value as --flag=" + args[0]
			}
			return usageError{fmt.Errorf("%s: unexpected argument %q, and the flags after it were not read; %s", sub, args[0], how)}
		}
	}
	for _, sub := range c.Subcommands {
		refuseArgs(sub, name)
	}
}
