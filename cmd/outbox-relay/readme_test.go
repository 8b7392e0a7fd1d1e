package main

import (
	"flag"
	"io"
	"os"
	"strings"
	"testing"
)

// TestREADMEDocumentsEveryFlag fails when a flag of run, setup or replay is
// missing from README.md, where users look for it.
func TestREADMEDocumentsEveryFlag(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var c Config
	var r replayFlags
	for _, bind := range []func(*flag.FlagSet){
		func(fs *flag.FlagSet) { bindRun(fs, &c) },
		func(fs *flag.FlagSet) { bindReplay(fs, &c, &r) },
	} {
		fs := flag.NewFlagSet("", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		bind(fs)
		fs.VisitAll(func(f *flag.Flag) {
			if !strings.Contains(string(readme), "`--"+f.Name+"`") && !strings.Contains(string(readme), "--"+f.Name+" ") {
				t.Errorf("README.md does not mention --%s", f.Name)
			}
		})
	}
}
