package cdc

import "time"

// State is what a Stream is doing.
type State int32

// The states of a Stream.
const (
	// StateConnecting: checking the server and opening the connection.
	StateConnecting State = iota
	// StateStandby: another connection holds the slot; waiting for it.
	StateStandby
	// StateStreaming: reading the slot.
	StateStreaming
	// StateReconnecting: the connection was lost; waiting to retry.
	StateReconnecting
	// StateStopped: Run has returned.
	StateStopped
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateStandby:
		return "standby"
	case StateStreaming:
		return "streaming"
	case StateReconnecting:
		return "reconnecting"
	case StateStopped:
		return "stopped"
	}
	return "unknown"
}

// State returns what s is doing; safe from any goroutine.
func (s *Stream) State() State { return State(s.state.Load()) }

// Beat returns when the streaming loop last went round; it goes round at
// least every status interval while streaming. Safe from any goroutine.
func (s *Stream) Beat() time.Time { return time.Unix(0, s.beat.Load()) }

func (s *Stream) setState(st State) { s.state.Store(int32(st)) }
