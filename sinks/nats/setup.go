package nats

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// jsErrCodeSubjectOverlap is the error code of the server's
// JSStreamSubjectOverlapErr: another stream captures some of the subjects.
// The client names no constant for it.
const jsErrCodeSubjectOverlap jetstream.ErrorCode = 10065

// streamSpec is a stream Setup makes sure of.
type streamSpec struct {
	what string // what it holds, for messages
	cfg  jetstream.StreamConfig
	// pattern is the subject filter of what the Sink publishes to it,
	// which its subjects must cover.
	pattern string
}

// streams returns the streams the Sink needs.
func (b *broker) streams() []streamSpec {
	c := b.cfg
	stream := func(name string, subjects []string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:       name,
			Subjects:   subjects,
			Storage:    jetstream.FileStorage,
			Replicas:   c.Replicas,
			Duplicates: c.DuplicateWindow,
			// JetStream's defaults for the rest: limits retention
			// without limits, discarding the oldest messages once a
			// limit an operator sets is reached.
		}
	}
	return []streamSpec{
		{what: "events", cfg: stream(c.Stream, c.StreamSubjects), pattern: b.subject.pattern},
		{what: "dead letters", cfg: stream(c.DeadLetterStream, []string{c.DeadLetterSubject}), pattern: c.DeadLetterSubject},
	}
}

// Setup makes sure the streams the Sink publishes to exist, waiting within
// ctx for a server to answer. The relay's setup command calls it, and run
// calls it at start; it is safe to call any number of times, from several
// relays at once.
//
// It creates each missing stream: Config.Stream with Config.StreamSubjects
// for the events, and Config.DeadLetterStream with Config.DeadLetterSubject
// for the dead letters, both with file storage, Config.Replicas replicas,
// a duplicate window of Config.DuplicateWindow, limits retention with no
// limits, and discard old. It never changes a stream that exists, whatever
// its settings; it returns an error when the existing stream cannot serve:
// its subjects do not cover the template's (each token with a placeholder
// counting as *) or the dead-letter subject, it has no duplicate window,
// it does not acknowledge publishes (no_ack), or it is sealed. It logs a
// warning when the duplicate window is shorter than
// Config.DuplicateWindow.
func (s *Sink) Setup(ctx context.Context) error {
	if err := s.b.conn.wait(ctx); err != nil {
		return fmt.Errorf("set up streams: %w", err)
	}
	for _, spec := range s.b.streams() {
		if err := s.b.ensureStream(ctx, spec); err != nil {
			return err
		}
	}
	return nil
}

// ensureStream creates spec's stream if missing, or checks the one that
// exists.
func (b *broker) ensureStream(ctx context.Context, spec streamSpec) error {
	name, subjects := spec.cfg.Name, spec.cfg.Subjects
	st, err := b.js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = b.js.CreateStream(ctx, spec.cfg)
		var api *jetstream.APIError
		switch {
		case err == nil:
			b.log.Info("created stream", "stream", name, "subjects", subjects, "duplicate_window", spec.cfg.Duplicates.String(), "replicas", spec.cfg.Replicas)
			return nil
		case errors.Is(err, jetstream.ErrStreamNameAlreadyInUse):
			// Another relay created it meanwhile: check it.
			st, err = b.js.Stream(ctx, name)
		case errors.As(err, &api) && api.ErrorCode == jsErrCodeSubjectOverlap:
			if other, lerr := b.js.StreamNameBySubject(ctx, subjects[0]); lerr == nil && other != "" {
				return fmt.Errorf("create stream %q of %s with subjects %q: stream %q captures some of them already (%w); set the stream name to %q if it is meant for them, or change its subjects",
					name, spec.what, subjects, other, err, other)
			}
			return fmt.Errorf("create stream %q of %s with subjects %q: another stream captures some of them already (%w); set the stream name to it, or change its subjects",
				name, spec.what, subjects, err)
		default:
			return fmt.Errorf("create stream %q of %s with subjects %q: %w", name, spec.what, subjects, b.jetStreamError(err))
		}
	}
	if err != nil {
		return fmt.Errorf("look up stream %q of %s: %w", name, spec.what, b.jetStreamError(err))
	}
	return b.checkStream(st.CachedInfo().Config, spec)
}

// checkStream reports why an existing stream with configuration got cannot
// hold spec's messages as the Sink needs.
func (b *broker) checkStream(got jetstream.StreamConfig, spec streamSpec) error {
	var errs []error
	if !coveredBy(got.Subjects, spec.pattern) {
		errs = append(errs, fmt.Errorf("stream %q of %s exists with subjects %q, which do not cover %q, where the relay publishes; add %q to its subjects, or set the stream name to a stream that captures them",
			got.Name, spec.what, got.Subjects, spec.pattern, spec.pattern))
	}
	if got.Duplicates == 0 {
		errs = append(errs, fmt.Errorf("stream %q of %s exists without a duplicate window, so messages sent again after a lost acknowledgement or a relay restart are stored twice; give it a window of minutes, such as %s",
			got.Name, spec.what, b.cfg.DuplicateWindow))
	} else if got.Duplicates < b.cfg.DuplicateWindow {
		b.log.Warn("stream's duplicate window is shorter than configured; messages sent again after a longer restart may be stored twice",
			"stream", got.Name, "duplicate_window", got.Duplicates.String(), "want", b.cfg.DuplicateWindow.String())
	}
	if got.NoAck {
		errs = append(errs, fmt.Errorf("stream %q of %s exists with no_ack set, so it never acknowledges a message and the relay would wait forever; turn no_ack off", got.Name, spec.what))
	}
	if got.Sealed {
		errs = append(errs, fmt.Errorf("stream %q of %s is sealed and takes no message; use another stream", got.Name, spec.what))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	b.log.Info("stream exists; left as it is", "stream", got.Name, "subjects", got.Subjects, "duplicate_window", got.Duplicates.String())
	return nil
}
