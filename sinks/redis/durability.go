package redis

import (
	"context"
	"fmt"

	goredis "github.com/redis/go-redis/v9"
)

// settings are what the server says of its persistence and mode.
type settings struct {
	appendonly  string // yes or no
	appendfsync string // always, everysec or no
	save        string // RDB save points; "" for none
	cluster     bool   // cluster-enabled yes
	// refused holds the error reply of a server that does not let the
	// sink read them (managed services rename or forbid CONFIG); the
	// fields above are then empty.
	refused string
}

// pipeliner is what readSettings needs of a client or a connection.
type pipeliner interface {
	Pipelined(ctx context.Context, fn func(goredis.Pipeliner) error) ([]goredis.Cmder, error)
}

// readSettings reads the settings with one CONFIG GET per parameter, in one
// round trip: before Redis 7, CONFIG GET takes only one. It returns the
// first error, an error reply of the server included.
func readSettings(ctx context.Context, c pipeliner) (settings, error) {
	params := []string{"appendonly", "appendfsync", "save", "cluster-enabled"}
	cmds := make([]*goredis.MapStringStringCmd, len(params))
	_, err := c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, name := range params {
			cmds[i] = p.ConfigGet(ctx, name)
		}
		return nil
	})
	if err != nil {
		return settings{}, fmt.Errorf("read persistence settings (CONFIG GET): %w", err)
	}
	return settings{
		appendonly:  cmds[0].Val()["appendonly"],
		appendfsync: cmds[1].Val()["appendfsync"],
		save:        cmds[2].Val()["save"],
		cluster:     cmds[3].Val()["cluster-enabled"] == "yes",
	}, nil
}

// risk returns what a server with s can lose of the entries it
// acknowledged, and what to set, or "" when it loses none short of losing
// its disk.
func (s settings) risk() string {
	switch {
	case s.appendonly != "yes" && s.save == "":
		return "Redis keeps no append-only file and saves no snapshots (appendonly no, save \"\"): a restart of Redis loses every entry it acknowledged; set appendonly yes and appendfsync always"
	case s.appendonly != "yes":
		return "Redis keeps no append-only file (appendonly no): a crash of Redis or of its machine loses every entry it acknowledged since its last snapshot; set appendonly yes and appendfsync always"
	case s.appendfsync == "everysec":
		return "Redis syncs its append-only file once a second (appendfsync everysec): a crash of its machine can lose the entries it acknowledged in the last second or two; set appendfsync always"
	case s.appendfsync != "always":
		return "Redis leaves syncing its append-only file to the operating system (appendfsync " + s.appendfsync + "): a crash of its machine can lose the entries it acknowledged in the last half minute or so; set appendfsync always"
	}
	return ""
}

// clusterError is Setup's error for a server in cluster mode.
func (b *broker) clusterError() error {
	return fmt.Errorf("redis: the server at %s runs in cluster mode (cluster-enabled yes), which the redis sink does not support; point the URL at a standalone server or a primary", b.url)
}

// report logs s, unless it was the last reported: a warning when
// acknowledged entries could be lost, an error in cluster mode, and at
// debug level when the server refused to tell.
func (b *broker) report(ctx context.Context, s settings) {
	b.mu.Lock()
	same := b.checked.Load() && b.reported == s
	b.reported = s
	b.checked.Store(true)
	b.mu.Unlock()
	if same {
		return
	}
	if s.refused != "" {
		b.log.DebugContext(ctx, "cannot read the Redis persistence settings (CONFIG GET); check yourself that the server has appendonly yes and appendfsync always",
			"url", b.url, "err", s.refused)
		return
	}
	attrs := []any{"url", b.url, "appendonly", s.appendonly, "appendfsync", s.appendfsync, "save", s.save}
	if s.cluster {
		b.log.ErrorContext(ctx, b.clusterError().Error(), "url", b.url)
	}
	if r := s.risk(); r != "" {
		b.log.WarnContext(ctx, r, attrs...)
		return
	}
	b.log.InfoContext(ctx, "connected to Redis, which syncs every entry to its append-only file before acknowledging it", attrs...)
}

// check reads the settings through c and reports them, unless the server
// is loading its data set. It returns the error of a connection that
// failed, or LOADING's, not that of a server refusing to tell.
func (b *broker) check(ctx context.Context, c pipeliner) (settings, error) {
	s, err := readSettings(ctx, c)
	switch code := replyCode(err); {
	case err == nil && (s.appendonly == "" || s.appendfsync == ""):
		// A server compatible with Redis that does not know them.
		s = settings{refused: "CONFIG GET returned no appendonly or appendfsync", cluster: s.cluster}
	case err == nil:
	case code == "" || code == "LOADING":
		return settings{}, err // no answer yet: check again later
	default:
		s = settings{refused: err.Error()}
	}
	b.report(ctx, s)
	return s, nil
}

// onConnect is the client's OnConnect hook: until the settings are
// reported, it checks them on each new connection. A connection that fails
// meanwhile is not used; one to a server still loading its data set is,
// and its commands get LOADING.
func (b *broker) onConnect(ctx context.Context, cn *goredis.Conn) error {
	if b.checked.Load() {
		return nil
	}
	if _, err := b.check(ctx, cn); err != nil && replyCode(err) == "" {
		return err
	}
	return nil
}
