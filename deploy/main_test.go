package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// relayBin is the outbox-relay binary the checks run: OUTBOX_RELAY_BIN, or
// one TestMain builds from the repository.
var relayBin string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		if bin := os.Getenv("OUTBOX_RELAY_BIN"); bin != "" {
			relayBin = bin
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "outbox-relay-deploy-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		relayBin = filepath.Join(dir, "outbox-relay")
		cmd := exec.Command("go", "build", "-o", relayBin, "./cmd/outbox-relay")
		cmd.Dir = deployRoot
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build outbox-relay:", err)
			return 1
		}
		return m.Run()
	}())
}
