package nats

import (
	"errors"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// jsErrCodeHeaderExceedsMaximum is the error code of the server's
// JSStreamHeaderExceedsMaximumErr: the message's headers exceed 64 KiB.
// The client names no constant for it.
const jsErrCodeHeaderExceedsMaximum jetstream.ErrorCode = 10097

// Classify reports whether err, from Send, means the message can never be
// stored, with its reason. Permanent: a message larger than the server's
// max_payload (the client refuses it, ErrMaxPayload) or the stream's
// maximum message size, headers over 64 KiB (ReasonSize); headers or a
// subject the client refuses (ReasonHeaders, ReasonDestination; Map
// refuses them first). Everything else passes and the message is sent
// again: no stream answering the subject (ErrNoStreamResponse: held until
// a stream captures it), a missing acknowledgement (ErrAsyncPublishTimeout,
// a publish the server refused for lack of permission among them), a lost
// or absent connection (ErrDisconnected, ErrReconnectBufExceeded), a
// stream at its limits with the discard-new policy, or out of resources
// (JSStreamStoreFailedF, JSInsufficientResourcesErr), a sealed stream,
// and a cluster electing a leader (JSClusterNotAvailErr, a duplicate
// still in process): each is a state of the servers, which their
// operators can end, and not of the message.
func (b *broker) Classify(err error) (reason string, permanent bool) { return classify(err) }

func classify(err error) (string, bool) {
	switch {
	case errors.Is(err, natsgo.ErrMaxPayload):
		return delivery.ReasonSize, true
	case errors.Is(err, natsgo.ErrBadHeaderMsg):
		return delivery.ReasonHeaders, true
	case errors.Is(err, natsgo.ErrBadSubject):
		return delivery.ReasonDestination, true
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case jetstream.JSErrCodeStreamMessageExceedsMaximum, jsErrCodeHeaderExceedsMaximum:
			return delivery.ReasonSize, true
		}
	}
	return "", false
}
