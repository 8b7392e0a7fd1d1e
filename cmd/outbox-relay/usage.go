package main

import (
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/peterbourgon/ff/v3/ffcli"
)

// usage is the help page of c. It is laid out like ffcli.DefaultUsageFunc,
// but writes each flag as the README and the error messages do, --name,
// followed by its environment variable, then its help text and default.
func usage(c *ffcli.Command) string {
	var b strings.Builder
	if c.ShortHelp != "" {
		fmt.Fprintf(&b, "DESCRIPTION\n  %s\n\n", c.ShortHelp)
	}
	short := c.ShortUsage
	if short == "" {
		short = c.Name
	}
	fmt.Fprintf(&b, "USAGE\n  %s\n\n", short)
	if c.LongHelp != "" {
		fmt.Fprintf(&b, "%s\n\n", c.LongHelp)
	}
	if len(c.Subcommands) > 0 {
		fmt.Fprintf(&b, "SUBCOMMANDS\n")
		tw := tabwriter.NewWriter(&b, 0, 2, 2, ' ', 0)
		for _, sc := range c.Subcommands {
			fmt.Fprintf(tw, "  %s\t%s\n", sc.Name, sc.ShortHelp)
		}
		tw.Flush()
		fmt.Fprintf(&b, "\n")
	}
	first := true
	c.FlagSet.VisitAll(func(f *flag.Flag) {
		if first {
			fmt.Fprintf(&b, "FLAGS\n")
			first = false
		}
		typ, text := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "  --%s", f.Name)
		if typ != "" {
			fmt.Fprintf(&b, " %s", typ)
		}
		fmt.Fprintf(&b, "  (env %s)\n      %s%s\n", envName(f.Name), text, defaultNote(f, typ))
	})
	return strings.TrimSpace(b.String()) + "\n"
}

// defaultNote is " (default X)" for a flag whose default is not its type's
// zero value, quoted for strings as the flag package does.
func defaultNote(f *flag.Flag, typ string) string {
	switch f.DefValue {
	case "", "false", "0", "0s":
		return ""
	}
	if typ == "string" {
		return fmt.Sprintf(" (default %q)", f.DefValue)
	}
	return fmt.Sprintf(" (default %s)", f.DefValue)
}
