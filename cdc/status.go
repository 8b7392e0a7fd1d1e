package cdc

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// promptStatus is the shortest time between two status updates that confirm
// a new position.
const promptStatus = 100 * time.Millisecond

// status sends the status updates due at now and returns when the loop
// must wake next. It sends one every StatusInterval, and within
// promptStatus of the flush position passing what it last confirmed; it
// never confirms less than ss.start. Having heard nothing for half of
// ss.silence it asks the server for a reply, and having heard nothing for
// ss.silence it returns an error: the connection is lost even if TCP has
// not noticed.
func (ss *session) status(now time.Time) (wake time.Time, _ error) {
	if quiet := now.Sub(ss.heard); quiet >= ss.silence {
		return time.Time{}, fmt.Errorf("replication stream on slot %q: nothing received for %s (wal_sender_timeout, or %s when it is 0): the connection is lost", ss.s.cfg.Slot, quiet.Round(time.Millisecond), defaultSilence)
	} else if quiet >= ss.silence/2 && !ss.asked {
		// An idle server that hears from us sends nothing: ask.
		ss.asked = true
		if err := ss.confirm(now, true); err != nil {
			return time.Time{}, err
		}
	}
	if !now.Before(ss.nextStatus) {
		if err := ss.confirm(now, false); err != nil {
			return time.Time{}, err
		}
	}
	// While received transactions await confirmation, confirm each
	// advance within promptStatus instead of waiting for the interval:
	// the server recycles WAL sooner, and a crash replays less.
	prompt := ss.received > ss.confirmed
	if prompt && !now.Before(ss.nextPrompt) {
		ss.nextPrompt = now.Add(promptStatus)
		if ss.flushed() > ss.confirmed {
			if err := ss.confirm(now, false); err != nil {
				return time.Time{}, err
			}
		}
	}
	wake = ss.nextStatus
	if prompt && ss.nextPrompt.Before(wake) {
		wake = ss.nextPrompt
	}
	if !ss.finishBy.IsZero() && ss.finishBy.Before(wake) {
		wake = ss.finishBy
	}
	if next := ss.heard.Add(ss.silence / 2); !ss.asked && next.Before(wake) {
		wake = next
	} else if next := ss.heard.Add(ss.silence); next.Before(wake) {
		wake = next
	}
	return wake, nil
}

// keepalive acts on a primary keepalive message. Outside a transaction the
// server's WAL end is received: everything before it has been sent. When
// the server asks for a reply, it confirms at once.
func (ss *session) keepalive(data []byte) error {
	m := ss.s.m
	ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data)
	if err != nil {
		return fmt.Errorf("parse keepalive: %w", err)
	}
	m.serverWAL.Set(float64(ka.ServerWALEnd))
	if !ss.inTxn {
		ss.h.Keepalive(ka.ServerWALEnd)
		// Everything before the server's WAL end has been sent.
		ss.received = ka.ServerWALEnd
		m.received.Set(float64(ss.received))
	}
	m.lag.Set(float64(lsnDiff(ka.ServerWALEnd, ss.received)))
	if ka.ReplyRequested {
		return ss.confirm(time.Now(), false)
	}
	return nil
}

// flushed is the position to confirm: the Handler's flush position, never
// less than the slot's when the session began.
func (ss *session) flushed() pglogrepl.LSN { return max(ss.h.Flushed(), ss.start) }

// confirm sends a status update with the position to confirm, asking for a
// reply if reply is set, and schedules the next one a StatusInterval after
// now.
func (ss *session) confirm(now time.Time, reply bool) error {
	f := ss.flushed()
	if err := ss.sendStatus(f, reply); err != nil {
		return err
	}
	ss.confirmed, ss.nextStatus = f, now.Add(ss.s.cfg.StatusInterval)
	return nil
}

// sendStatus confirms flushed to the server. The write position is reported
// equal to it: the server pings a client whose write position lags what it
// sent, and the pings move an idle relay's position forward.
func (ss *session) sendStatus(flushed pglogrepl.LSN, reply bool) error {
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), ss.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: flushed,
		WALFlushPosition: flushed,
		WALApplyPosition: flushed,
		ReplyRequested:   reply,
	})
	if err != nil {
		return fmt.Errorf("send standby status at %s: %w", flushed, err)
	}
	ss.s.sent = flushed
	ss.s.m.confirmed.Set(float64(flushed))
	return nil
}
