package redis

import (
	"context"
	"fmt"
	"log/slog"

	goredis "github.com/redis/go-redis/v9"
)

// ClientLogger routes the lines the go-redis client logs on its own (a
// failed dial, a connection it dropped), which go to standard error by
// default, to logger at debug level under component=redis: the sink reports
// what matters itself, with a warning per batch it sends again and Ping's
// errors. go-redis has one logger per process, so main calls this once,
// before New; nil discards the lines.
func ClientLogger(logger *slog.Logger) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	goredis.SetLogger(clientLogger{logger.With("component", Name)})
}

// clientLogger is go-redis's Logging interface on a slog.Logger.
type clientLogger struct{ log *slog.Logger }

// Printf logs one line of the client.
func (l clientLogger) Printf(ctx context.Context, format string, v ...any) {
	if l.log.Enabled(ctx, slog.LevelDebug) {
		l.log.DebugContext(ctx, fmt.Sprintf(format, v...))
	}
}
