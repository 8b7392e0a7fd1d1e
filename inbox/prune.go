package inbox

import (
	"context"
	"fmt"
	"time"
)

// Prune deletes this consumer's inbox rows processed more than olderThan
// ago, Config.PruneBatch rows per statement, and returns how many it
// deleted. It is safe to call while Run runs. olderThan must exceed how
// long a duplicate can still arrive; see the package documentation.
func (c *Consumer) Prune(ctx context.Context, olderThan time.Duration) (int64, error) {
	if olderThan <= 0 {
		return 0, fmt.Errorf("inbox: prune older than %s: want a positive window", olderThan)
	}
	sql := `DELETE FROM ` + c.table.Quoted() + ` WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM ` + c.table.Quoted() + `
    WHERE consumer = $1 AND processed_at < now() - make_interval(secs => $2)
    LIMIT $3))`
	var total int64
	for {
		tag, err := c.cfg.DB.Exec(ctx, sql, c.cfg.Name, olderThan.Seconds(), c.cfg.PruneBatch)
		if err != nil {
			return total, fmt.Errorf("prune inbox table %s for consumer %q: %w", c.table, c.cfg.Name, err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(c.cfg.PruneBatch) {
			return total, nil
		}
	}
}

// pruneLoop prunes rows older than Config.Retention every
// Config.PruneInterval until ctx ends.
func (c *Consumer) pruneLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.PruneInterval)
	defer t.Stop()
	for {
		n, err := c.Prune(ctx, c.cfg.Retention)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			c.logger.Warn("prune failed; retrying at the next interval", "err", err)
		case n > 0:
			c.logger.Info("pruned inbox rows", "rows", n, "retention", c.cfg.Retention)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
