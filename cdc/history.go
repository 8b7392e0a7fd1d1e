package cdc

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
)

// identity names one server history, as IDENTIFY_SYSTEM reports it. LSNs,
// and so the relay's reading past transactions it relayed, compare only
// within one history.
type identity struct {
	SystemID string
	Timeline int32
}

// follows returns nil when cur is the history first streamed from, or an
// error wrapping ErrSystemChanged that says what changed and what to do.
// since is the position last confirmed.
func (first identity) follows(cur identity, slot string, since pglogrepl.LSN) error {
	switch {
	case cur.SystemID != first.SystemID:
		return fmt.Errorf("the server's system identifier changed from %s to %s while the relay was running on slot %q: it is another cluster (a failover to a server restored or initialised apart); positions of the two cannot be compared, and events committed since %s may not have been relayed: %w",
			first.SystemID, cur.SystemID, slot, since, ErrSystemChanged)
	case cur.Timeline != first.Timeline:
		return fmt.Errorf("the server's timeline changed from %d to %d while the relay was running on slot %q: a standby was promoted; events committed since %s on the old timeline may not have been relayed; check the slot's position on the new primary, republish from the outbox table the rows written since then, and restart the relay: %w",
			first.Timeline, cur.Timeline, slot, since, ErrSystemChanged)
	}
	return nil
}

// defaultSilence is how long a stream may hear nothing from the server
// when wal_sender_timeout is 0 (disabled).
const defaultSilence = time.Minute

// silenceFor returns how long the stream waits for a message from the
// server before it counts the connection lost, given wal_sender_timeout as
// SHOW prints it ("60s", "1min", "500ms", "0").
func silenceFor(walSenderTimeout string) (time.Duration, error) {
	v := strings.TrimSpace(walSenderTimeout)
	i := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' })
	num, unit := v, "ms"
	if i >= 0 {
		num, unit = v[:i], v[i:]
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse wal_sender_timeout %q: %w", walSenderTimeout, err)
	}
	units := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "min": time.Minute, "h": time.Hour, "d": 24 * time.Hour}
	u, ok := units[unit]
	if !ok {
		return 0, fmt.Errorf("parse wal_sender_timeout %q: unknown unit %q", walSenderTimeout, unit)
	}
	if n == 0 {
		return defaultSilence, nil
	}
	return time.Duration(n) * u, nil
}
