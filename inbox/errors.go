package inbox

import (
	"errors"
	"fmt"
)

// ErrNoID is the error, permanent, for a record without the "id" header
// the default DedupeKey reads.
var ErrNoID = errors.New(`inbox: record has no "id" header`)

// permanentError marks an error the consumer must not retry.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// retryableError marks an error worth another attempt.
type retryableError struct{ err error }

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

// Permanent marks err as permanent: a Handler or DedupeKey returning it has
// its record dead-lettered at once, without another attempt. The result
// wraps err (errors.Is and errors.As see through it) and is nil if err is.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// Retryable marks err as retryable: the record is tried again after a
// backoff, until Config.MaxAttempts failures. An unmarked Handler error is
// retryable too; the mark documents intent and overrides a Permanent mark
// it wraps. The result wraps err and is nil if err is.
func Retryable(err error) error {
	if err == nil {
		return nil
	}
	return &retryableError{err}
}

// IsPermanent reports whether err, or an error it wraps, was marked
// Permanent, and not marked Retryable above that.
func IsPermanent(err error) bool {
	for err != nil {
		switch err.(type) {
		case *permanentError:
			return true
		case *retryableError:
			return false
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if IsPermanent(e) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}

// tableError reports a missing or malformed inbox table: fatal for Run.
func tableError(table string, err error) error {
	return fmt.Errorf("inbox table %s: %w (create it with inbox.Setup or the SQL of inbox.SetupSQL)", table, err)
}
