package cdc_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
)

// TestMonitorWatchesTable changes the outbox table under a running
// Monitor: dropping it, creating it again (published or not) or taking it
// out of the publication must stop Run with ErrTableChanged and the replay
// to run, since pgoutput sends nothing of such rows; changes that keep the
// table and its publication must not.
func TestMonitorWatchesTable(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change []string
		setup  bool // run setup again after the change
		stops  bool
		saying string
	}{
		{"dropped", []string{`DROP TABLE outbox`}, false, true, "was dropped"},
		{"created again", []string{`DROP TABLE outbox`}, true, true, "was dropped and created again"},
		{"unpublished", []string{`ALTER PUBLICATION outbox_relay DROP TABLE outbox`}, false, true, `was taken out of publication "outbox_relay"`},
		{"altered", []string{`ALTER TABLE outbox ADD COLUMN note text`, `TRUNCATE outbox`, `VACUUM FULL outbox`}, false, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := cdc.Config{DSN: pgtest.NewDatabase(t), Slot: "monitor_" + strings.ReplaceAll(tc.name, " ", "_")}
			conn := setupDB(t, cfg)
			mo, err := cdc.NewMonitor(cfg, 50*time.Millisecond, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- mo.Run(t.Context()) }()
			deadline := time.Now().Add(10 * time.Second)
			for !mo.Healthy() && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if !mo.Healthy() {
				t.Fatal("the monitor did not read the slot within 10 s")
			}
			for _, sql := range tc.change {
				exec(t, conn, sql)
			}
			if tc.setup {
				if err := cdc.Setup(t.Context(), conn, cfg, nil); err != nil {
					t.Fatalf("Setup() = %v", err)
				}
			}
			select {
			case err := <-done:
				if !tc.stops {
					t.Fatalf("Run() = %v after a change that keeps the table published, want it to go on", err)
				}
				if !errors.Is(err, cdc.ErrTableChanged) || !strings.Contains(err.Error(), tc.saying) || !strings.Contains(err.Error(), "outbox-relay replay --since ") {
					t.Errorf("Run() = %v, want ErrTableChanged saying %q and the replay to run", err, tc.saying)
				}
			case <-time.After(2 * time.Second):
				if tc.stops {
					t.Fatal("Run goes on 2 s after the change, want it stopped")
				}
				if !mo.Healthy() {
					t.Error("the monitor stopped reading the slot after the change")
				}
			}
		})
	}
}
