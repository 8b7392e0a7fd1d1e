// Package state owns the relay's state table, the table schema.Migrations
// creates next to the outbox table (schema.Table.StateTable): one row per
// replication slot, holding the slot's newest confirmed horizon (Horizon)
// and, while a recovery of the lost slot runs, when it began (MarkRecovery).
// It also owns the rule that says which outbox rows a horizon covers
// (CommittedIn), which prune and slot recovery share.
//
// Invariant: the recorded horizon of a slot only moves forward, is saved
// only once the slot has confirmed it (SaveHorizon's contract), and does
// not change while a recovery of the slot is marked as begun; so every row
// CommittedIn selects for it was confirmed by the slot.
package state
