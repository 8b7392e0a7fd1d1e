package schema_test

import (
	"testing"

	"github.com/outbox-relay/outbox-relay/schema"
)

// TestRecoveryMark records a recovery as begun and ended, beside a horizon
// recorded before and after: the mark alone is no horizon, and neither
// erases the other.
func TestRecoveryMark(t *testing.T) {
	_, conn := newOutbox(t)
	ctx := t.Context()
	tbl := schema.DefaultTable
	const slot = "outbox_relay"

	if _, ok, err := schema.RecoveryStarted(ctx, conn, tbl, slot); err != nil || ok {
		t.Fatalf("RecoveryStarted before any mark = %t, %v; want false, nil", ok, err)
	}
	if err := schema.MarkRecovery(ctx, conn, tbl, slot); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := schema.RecoveryStarted(ctx, conn, tbl, slot); err != nil || !ok {
		t.Fatalf("RecoveryStarted after MarkRecovery = %t, %v; want true, nil", ok, err)
	}
	if _, ok, err := schema.LoadHorizon(ctx, conn, tbl, slot); err != nil || ok {
		t.Fatalf("LoadHorizon with only a recovery recorded = %t, %v; want false, nil", ok, err)
	}

	h, err := schema.TakeHorizon(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	h.ConfirmedLSN = h.LSN
	if err := schema.SaveHorizon(ctx, conn, tbl, slot, h); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := schema.LoadHorizon(ctx, conn, tbl, slot); err != nil || !ok {
		t.Fatalf("LoadHorizon after SaveHorizon on a recovery's row = %t, %v; want true, nil", ok, err)
	}
	if _, ok, err := schema.RecoveryStarted(ctx, conn, tbl, slot); err != nil || !ok {
		t.Fatalf("RecoveryStarted after SaveHorizon = %t, %v; want the recovery still recorded", ok, err)
	}

	if err := schema.EndRecovery(ctx, conn, tbl, slot); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := schema.RecoveryStarted(ctx, conn, tbl, slot); err != nil || ok {
		t.Fatalf("RecoveryStarted after EndRecovery = %t, %v; want false, nil", ok, err)
	}
	if _, ok, err := schema.LoadHorizon(ctx, conn, tbl, slot); err != nil || !ok {
		t.Fatalf("LoadHorizon after EndRecovery = %t, %v; want the horizon kept", ok, err)
	}
}
