package redis

import (
	"fmt"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// streamSyntax is what a Config.Stream may hold. Redis keys are binary
// safe, so any literal text is allowed except braces, which only open and
// close placeholders.
var streamSyntax = delivery.TemplateSyntax{Fields: delivery.AllFields, StrictBraces: true}

// parseTemplate parses a stream key template.
func parseTemplate(s string) (delivery.Template, error) {
	if s == "" {
		return delivery.Template{}, fmt.Errorf("stream template is empty; use a template such as %q", DefaultStream)
	}
	t, err := delivery.ParseTemplate(s, streamSyntax)
	if err != nil {
		return delivery.Template{}, fmt.Errorf("stream template %q: %w", s, err)
	}
	return t, nil
}
