package rabbitmq

import (
	"fmt"
	"unicode/utf8"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

const (
	// exchangePlaceholders are the fields Config.Exchange may name: an
	// exchange per aggregate would be an unbounded number of exchanges.
	exchangePlaceholders = delivery.FieldAggregateType | delivery.FieldEventType
	// routingKeyPlaceholders are the fields Config.RoutingKey may name.
	routingKeyPlaceholders = delivery.AllFields
)

// parseTemplate parses s, which may hold the placeholders of the fields
// allowed. It fails when s holds another placeholder, is not UTF-8, or has
// more literal bytes than a name may.
func parseTemplate(s string, allowed delivery.Fields) (delivery.Template, error) {
	if !utf8.ValidString(s) {
		return delivery.Template{}, fmt.Errorf("template %q is not UTF-8; RabbitMQ names are UTF-8 text", s)
	}
	t, err := delivery.ParseTemplate(s, delivery.TemplateSyntax{Fields: allowed})
	if err != nil {
		return delivery.Template{}, fmt.Errorf("template %q: %w", s, err)
	}
	if t.LiteralLen() > maxName {
		return delivery.Template{}, fmt.Errorf("template %q: %d bytes besides placeholders, more than the %d RabbitMQ allows in a name", s, t.LiteralLen(), maxName)
	}
	return t, nil
}

// legalName reports whether RabbitMQ accepts name as an exchange or queue
// name: 1 to 255 bytes of UTF-8.
func legalName(name string) bool {
	return name != "" && len(name) <= maxName && utf8.ValidString(name)
}

// legalRoutingKey reports whether RabbitMQ accepts key as a routing key: at
// most 255 bytes of UTF-8, possibly none.
func legalRoutingKey(key string) bool {
	return len(key) <= maxName && utf8.ValidString(key)
}
