package state_test

import (
	"testing"

	"github.com/outbox-relay/outbox-relay/internal/state"
	"github.com/outbox-relay/outbox-relay/schema"
)

// TestRecoveryMark records a recovery as begun and ended: the mark alone is
// no horizon, no horizon is saved while it is set, and neither erases the
// other.
func TestRecoveryMark(t *testing.T) {
	_, conn := newOutbox(t)
	ctx := t.Context()
	tbl := schema.DefaultTable
	const slot = "outbox_relay"

	if _, ok, err := state.RecoveryStarted(ctx, conn, tbl, slot); err != nil || ok {
		t.Fatalf("RecoveryStarted before any mark = %t, %v; want false, nil", ok, err)
	}
	if err := state.MarkRecovery(ctx, conn, tbl, slot); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := state.RecoveryStarted(ctx, conn, tbl, slot); err != nil || !ok {
		t.Fatalf("RecoveryStarted after MarkRecovery = %t, %v; want true, nil", ok, err)
	}
	if _, ok, err := state.LoadHorizon(ctx, conn, tbl, slot); err != nil || ok {
		t.Fatalf("LoadHorizon with only a recovery recorded = %t, %v; want false, nil", ok, err)
	}

	// No horizon is saved while the recovery is recorded: the slot is new.
	h, err := state.TakeHorizon(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	h.ConfirmedLSN = h.LSN
	if err := state.SaveHorizon(ctx, conn, tbl, slot, h); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := state.LoadHorizon(ctx, conn, tbl, slot); err != nil || ok {
		t.Fatalf("LoadHorizon after SaveHorizon during a recovery = %t, %v; want false, nil", ok, err)
	}

	if err := state.EndRecovery(ctx, conn, tbl, slot); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := state.RecoveryStarted(ctx, conn, tbl, slot); err != nil || ok {
		t.Fatalf("RecoveryStarted after EndRecovery = %t, %v; want false, nil", ok, err)
	}
	if err := state.SaveHorizon(ctx, conn, tbl, slot, h); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := state.LoadHorizon(ctx, conn, tbl, slot); err != nil || !ok {
		t.Fatalf("LoadHorizon after the recovery ended = %t, %v; want true, nil", ok, err)
	}
	// A recovery marked later keeps the horizon recorded before it.
	if err := state.MarkRecovery(ctx, conn, tbl, slot); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := state.LoadHorizon(ctx, conn, tbl, slot); err != nil || !ok {
		t.Fatalf("LoadHorizon once a recovery is marked = %t, %v; want the horizon kept", ok, err)
	}
}
