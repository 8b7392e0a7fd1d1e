package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

// dlqOptions is what the dlq subcommands are told besides Kafka.
type dlqOptions struct {
	since  string
	asJSON bool
	ids    stringList
	offs   stringList
	all    bool
	dryRun bool
}

// stringList is a flag.Value that a flag repeated, or given a
// comma-separated list, appends to.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// bindDLQ binds the Kafka flags of the dlq subcommands: the same names,
// and so the same environment, as run's.
func bindDLQ(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.brokers, "kafka-brokers", "localhost:9092", "Kafka bootstrap brokers, comma-separated host:port")
	fs.StringVar(&c.Kafka.DeadLetterTopic, "dlq-topic", kafka.DefaultDeadLetterTopic, "dead-letter topic to read: the relay's (run's --dlq-topic) or an inbox consumer's (inbox-dlq by default)")
	fs.StringVar(&c.Kafka.Topic, "topic", "outbox.{aggregate_type}", "run's topic template; names the original topic of relay dead letters written before they carried dlq_topic")
	fs.StringVar(&c.Kafka.ClientID, "kafka-client-id", kafka.DefaultClientID, "Kafka client ID")
	fs.BoolVar(&c.Kafka.AllowAutoTopicCreation, "kafka-auto-create-topics", true, "ask the broker to create a missing original topic when replaying (the broker must allow it); the dead-letter topic is never created")
	fs.IntVar(&c.Kafka.MaxMessageBytes, "kafka-max-message-bytes", kafka.DefaultMaxMessageBytes, "largest record batch the producer sends; match the broker's message.max.bytes")
	fs.StringVar((*string)(&c.Kafka.Compression), "kafka-compression", string(kafka.DefaultCompression), "codec of record batches: none, snappy, lz4 or zstd")
	bindKafkaSecurity(fs, c)
}

// finishDLQ reads the secret files and validates the Kafka settings.
func (c *Config) finishDLQ() error {
	if err := c.readSecrets(); err != nil {
		return usageError{err}
	}
	for _, b := range strings.Split(c.brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			c.Kafka.Brokers = append(c.Kafka.Brokers, b)
		}
	}
	if err := c.Kafka.Validate(); err != nil {
		return usageError{err}
	}
	return nil
}

// newDLQCommand returns the dlq subcommand and its list and replay.
func newDLQCommand(newFS func(string) *flag.FlagSet, opts []ff.Option, stdout, stderr io.Writer) *ffcli.Command {
	var listCfg, replayCfg Config
	var lo, ro dlqOptions
	listFS := newFS("dlq list")
	bindDLQ(listFS, &listCfg)
	listFS.StringVar(&lo.since, "since", "", "list only dead letters set aside at or after this: an RFC 3339 time, or a duration ago (36h)")
	listFS.BoolVar(&lo.asJSON, "json", false, "print one JSON object per dead letter instead of a table")
	replayFS := newFS("dlq replay")
	bindDLQ(replayFS, &replayCfg)
	replayFS.Var(&ro.ids, "id", "replay the dead letters of this event `ID` (the id header); repeat it, or separate IDs with commas")
	replayFS.Var(&ro.offs, "offset", "replay the dead letter at this offset, as `PARTITION/OFFSET` (dlq list prints it) or OFFSET when only one partition has it; repeatable")
	replayFS.BoolVar(&ro.all, "all", false, "replay every dead letter of the topic")
	replayFS.BoolVar(&ro.dryRun, "dry-run", false, "print what would be sent, and send nothing")
	parent := newFS("dlq")
	var cmd *ffcli.Command
	cmd = &ffcli.Command{
		Name:       "dlq",
		ShortUsage: "outbox-relay dlq <list|replay> [flags]",
		ShortHelp:  "List dead letters, of the relay or of inbox consumers, and republish chosen ones to their original topics.",
		FlagSet:    parent,
		UsageFunc:  usage,
		Subcommands: []*ffcli.Command{
			{
				Name:       "list",
				ShortUsage: "outbox-relay dlq list [--dlq-topic T] [--since time] [--json] [flags]",
				ShortHelp:  "Print the dead letters of the topic, from its start to its end when the command starts, and count them.",
				FlagSet:    listFS,
				UsageFunc:  usage,
				Options:    opts,
				Exec: func(ctx context.Context, _ []string) error {
					if err := listCfg.finishDLQ(); err != nil {
						return err
					}
					since, err := parseSince(lo.since, time.Now())
					if err != nil {
						return err
					}
					return dlqList(ctx, listCfg.Kafka, since, lo.asJSON, stdout, stderr)
				},
			},
			{
				Name:       "replay",
				ShortUsage: "outbox-relay dlq replay [--dlq-topic T] (--id ID... | --offset P/N... | --all) [--dry-run] [flags]",
				ShortHelp:  "Republish chosen dead letters to their original topics, with their original key, value and headers (id unchanged) and dlq_replayed_from.",
				LongHelp: "Each record goes with an idempotent producer, acks from all in-sync replicas, and is waited for. " +
					"The id header is kept, so consumers that deduplicate by id (the inbox does) see a replay of an event they already handled as a duplicate; " +
					"the position header is kept too, so a consumer that deduplicates by position alone skips it. " +
					"A relay dead letter whose payload was omitted cannot be replayed: its row is in the outbox table, publish it with `outbox-relay replay --since <id> --until <id>`.",
				FlagSet:   replayFS,
				UsageFunc: usage,
				Options:   opts,
				Exec: func(ctx context.Context, _ []string) error {
					if err := replayCfg.finishDLQ(); err != nil {
						return err
					}
					if !ro.all && len(ro.ids) == 0 && len(ro.offs) == 0 {
						return usageError{errors.New("choose the dead letters to replay: --id ID, --offset PARTITION/OFFSET or --all (dlq list shows them)")}
					}
					if ro.all && (len(ro.ids) > 0 || len(ro.offs) > 0) {
						return usageError{errors.New("--all replays every dead letter; drop it, or drop --id and --offset")}
					}
					return dlqReplay(ctx, replayCfg.Kafka, ro, stdout, stderr)
				},
			},
		},
		Exec: func(context.Context, []string) error {
			fmt.Fprintln(stderr, usage(cmd))
			return usageError{errors.New("name a dlq subcommand: list or replay")}
		},
	}
	return cmd
}

// parseSince reads --since: an RFC 3339 time, or a duration before now.
// Empty means the zero time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := parseRetention(s); err == nil {
		return now.Add(-d), nil
	}
	return time.Time{}, usageError{fmt.Errorf("--since %q: use an RFC 3339 time such as 2026-05-01T12:00:00Z, or a duration ago such as 36h or 7d", s)}
}

// openLetters returns a Letters for cfg once a broker answers.
func openLetters(ctx context.Context, cfg kafka.Config) (*kafka.Letters, error) {
	d, err := kafka.NewLetters(cfg)
	if err != nil {
		return nil, usageError{err}
	}
	pctx, cancel := context.WithTimeout(ctx, brokerCheckTimeout)
	defer cancel()
	if err := d.Ping(pctx); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// readLetters reads every letter of cfg's dead-letter topic.
func readLetters(ctx context.Context, d *kafka.Letters, topic string, fn func(*kafka.Letter) error) error {
	err := d.Read(ctx, topic, fn)
	if errors.Is(err, kafka.ErrNoTopic) {
		return usageError{fmt.Errorf("%w; check --dlq-topic (OUTBOX_RELAY_DLQ_TOPIC): the relay's default is %s, an inbox consumer's inbox-dlq", err, kafka.DefaultDeadLetterTopic)}
	}
	return err
}

// maxListError is how much of a dead letter's error a table line shows.
const maxListError = 80

// letterJSON is a line of `dlq list --json`.
type letterJSON struct {
	Topic          string            `json:"topic"`
	Partition      int32             `json:"partition"`
	Offset         int64             `json:"offset"`
	Time           time.Time         `json:"time"`
	Kind           string            `json:"kind"`
	OriginalTopic  string            `json:"original_topic,omitempty"`
	Key            string            `json:"key"`
	ID             string            `json:"id,omitempty"`
	EventType      string            `json:"event_type,omitempty"`
	AggregateType  string            `json:"aggregate_type,omitempty"`
	Reason         string            `json:"reason,omitempty"`
	Error          string            `json:"error,omitempty"`
	Attempts       int               `json:"attempts"`
	Consumer       string            `json:"consumer,omitempty"`
	Group          string            `json:"group,omitempty"`
	PayloadOmitted bool              `json:"payload_omitted,omitempty"`
	ValueBytes     int               `json:"value_bytes"`
	Headers        map[string]string `json:"headers,omitempty"`
	Replayable     bool              `json:"replayable"`
	Refusal        string            `json:"refusal,omitempty"`
}

// dlqList prints the dead letters of cfg.DeadLetterTopic set aside at or
// after since, then counts them.
func dlqList(ctx context.Context, cfg kafka.Config, since time.Time, asJSON bool, stdout, stderr io.Writer) error {
	d, err := openLetters(ctx, cfg)
	if err != nil {
		return err
	}
	defer d.Close()
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	if !asJSON {
		fmt.Fprintln(tw, "OFFSET\tTIME\tKIND\tTOPIC\tID\tEVENT_TYPE\tATTEMPTS\tREASON")
	}
	enc := json.NewEncoder(stdout)
	kinds := map[string]int{}
	total, skipped := 0, 0
	err = readLetters(ctx, d, cfg.DeadLetterTopic, func(l *kafka.Letter) error {
		if l.Time.Before(since) {
			skipped++
			return nil
		}
		total++
		kinds[l.Kind]++
		if asJSON {
			return enc.Encode(toJSON(l))
		}
		_, err := fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", l.Where(), l.Time.UTC().Format(time.RFC3339), l.Kind,
			orDash(l.Original.Topic), orDash(l.ID), orDash(l.EventType), l.Attempts, truncate(reasonText(l), maxListError))
		return err
	})
	if err != nil {
		return err
	}
	if !asJSON {
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	summary := fmt.Sprintf("%d dead letters in %s (%d relay, %d inbox, %d unknown)", total, cfg.DeadLetterTopic,
		kinds[kafka.KindRelay], kinds[kafka.KindInbox], kinds[kafka.KindUnknown])
	if skipped > 0 {
		summary += fmt.Sprintf("; %d set aside before --since not shown", skipped)
	}
	if asJSON {
		fmt.Fprintln(stderr, summary) // stdout stays JSON lines
	} else {
		fmt.Fprintln(stdout, summary)
	}
	return nil
}

func toJSON(l *kafka.Letter) letterJSON {
	j := letterJSON{Topic: l.Topic, Partition: l.Partition, Offset: l.Offset, Time: l.Time.UTC(), Kind: l.Kind,
		OriginalTopic: l.Original.Topic, Key: string(l.Original.Key), ID: l.ID, EventType: l.EventType,
		AggregateType: l.AggregateType, Reason: l.Reason, Error: l.Error, Attempts: l.Attempts,
		Consumer: l.Consumer, Group: l.Group, PayloadOmitted: l.PayloadOmitted, ValueBytes: len(l.Original.Value),
		Replayable: l.Refusal == "", Refusal: refusalText(l)}
	for _, h := range l.Original.Headers {
		if h.Key == kafka.HeaderDLQReplayedFrom {
			continue
		}
		if j.Headers == nil {
			j.Headers = map[string]string{}
		}
		j.Headers[h.Key] = string(h.Value)
	}
	return j
}

// refusalText is why l cannot be replayed and, when the relay's flags or
// commands are the way out, which.
func refusalText(l *kafka.Letter) string {
	replay := fmt.Sprintf("`outbox-relay replay --since %s --until %s`", l.ID, l.ID)
	switch l.Refused {
	case kafka.RefusedNoTopic:
		return l.Refusal + ": fix the template (--topic) and try again"
	case kafka.RefusedPayloadOmitted:
		return l.Refusal + ": raise --kafka-max-message-bytes and the topic's max.message.bytes if it is too large, then run " + replay
	case kafka.RefusedNoAggregateID, kafka.RefusedHeaders:
		return l.Refusal + ": fix the row and run " + replay
	}
	return l.Refusal
}

// replayHint adds to err, a dead letter's failed replay, the flags that
// change the outcome.
func replayHint(err error) error {
	switch {
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return fmt.Errorf("%w; raise both (--kafka-max-message-bytes and the topic's max.message.bytes), then replay it again", err)
	case errors.Is(err, kerr.UnknownTopicOrPartition):
		return fmt.Errorf("%w; create the topic, or let the client create it (--kafka-auto-create-topics, if the brokers allow it)", err)
	}
	return err
}

// reasonText is a table's REASON: the relay's reason and error, or the
// inbox consumer's error.
func reasonText(l *kafka.Letter) string {
	s := l.Error
	if l.Reason != "" {
		s = l.Reason + ": " + s
	}
	if l.Kind == kafka.KindUnknown {
		s = "not a dead letter of the relay or an inbox"
	}
	return strings.Join(strings.Fields(s), " ")
}

func truncate(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// dlqReplay republishes the dead letters ro chooses, one at a time in
// offset order, and prints each outcome.
func dlqReplay(ctx context.Context, cfg kafka.Config, ro dlqOptions, stdout, stderr io.Writer) error {
	d, err := openLetters(ctx, cfg)
	if err != nil {
		return err
	}
	defer d.Close()
	var letters []*kafka.Letter
	if err := readLetters(ctx, d, cfg.DeadLetterTopic, func(l *kafka.Letter) error {
		letters = append(letters, l)
		return nil
	}); err != nil {
		return err
	}
	chosen, err := chooseLetters(letters, ro, cfg.DeadLetterTopic)
	if err != nil {
		return err
	}
	var sent, refused, failed int
	for _, l := range chosen {
		where := cfg.DeadLetterTopic + "/" + l.Where()
		switch {
		case l.Refusal != "":
			refused++
			fmt.Fprintf(stdout, "refused\t%s\tid %s\t%s\n", where, orDash(l.ID), refusalText(l))
		case ro.dryRun:
			sent++
			fmt.Fprintf(stdout, "would send\t%s\tid %s\tto %s\tkey %q\t%d value bytes\t%d headers\n",
				where, orDash(l.ID), l.Original.Topic, l.Original.Key, len(l.Original.Value), len(l.Original.Headers))
		default:
			p, o, err := d.Replay(ctx, l)
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("interrupted after %d of %d dead letters; %s may or may not have been sent: %w", sent, len(chosen), where, ctx.Err())
				}
				failed++
				fmt.Fprintf(stdout, "failed\t%s\tid %s\t%v\n", where, orDash(l.ID), replayHint(err))
				continue
			}
			sent++
			fmt.Fprintf(stdout, "sent\t%s\tid %s\tto %s/%d/%d\n", where, orDash(l.ID), l.Original.Topic, p, o)
		}
	}
	verb := "replayed"
	if ro.dryRun {
		verb = "would replay"
	}
	fmt.Fprintf(stderr, "%s %d of %d chosen dead letters of %s (%d refused, %d failed)\n", verb, sent, len(chosen), cfg.DeadLetterTopic, refused, failed)
	if refused+failed > 0 {
		return fmt.Errorf("%d of %d chosen dead letters were not replayed (%d refused, %d failed); each line above says why and what to do", refused+failed, len(chosen), refused, failed)
	}
	return nil
}

// chooseLetters returns the letters ro names, in offset order per
// partition, each once. An event ID dead-lettered more than once is
// replayed once, from its last dead letter, so that the original topic
// receives it once. Unknown IDs and offsets are usage errors.
func chooseLetters(letters []*kafka.Letter, ro dlqOptions, topic string) ([]*kafka.Letter, error) {
	// lastOf maps a kind and ID to the index of its last dead letter.
	lastOf := map[[2]string]int{}
	for i, l := range letters {
		if l.ID != "" {
			lastOf[[2]string{l.Kind, l.ID}] = i
		}
	}
	pick := map[int]bool{}
	add := func(i int) {
		l := letters[i]
		if j, ok := lastOf[[2]string{l.Kind, l.ID}]; ok && l.ID != "" {
			i = j
		}
		pick[i] = true
	}
	if ro.all {
		for i := range letters {
			add(i)
		}
	}
	var problems []string
	for _, id := range ro.ids {
		found := false
		for i, l := range letters {
			if l.ID == id {
				add(i)
				found = true
			}
		}
		if !found {
			problems = append(problems, fmt.Sprintf("--id %s: no dead letter of %s has that id", id, topic))
		}
	}
	for _, off := range ro.offs {
		i, err := findOffset(letters, off, topic)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		pick[i] = true
	}
	if len(problems) > 0 {
		return nil, usageError{fmt.Errorf("%s; `outbox-relay dlq list` shows what the topic holds", strings.Join(problems, "; "))}
	}
	var chosen []*kafka.Letter
	for i, l := range letters {
		if pick[i] {
			chosen = append(chosen, l)
		}
	}
	return chosen, nil
}

// findOffset returns the index of the letter at off: PARTITION/OFFSET, or
// OFFSET when one partition alone has it.
func findOffset(letters []*kafka.Letter, off, topic string) (int, error) {
	partition, offset := int32(-1), int64(0)
	p, o, ok := strings.Cut(off, "/")
	if !ok {
		p, o = "", off
	}
	n, err := strconv.ParseInt(o, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("--offset %q: use PARTITION/OFFSET such as 3/17, or OFFSET", off)
	}
	offset = n
	if p != "" {
		n, err := strconv.ParseInt(p, 10, 32)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("--offset %q: use PARTITION/OFFSET such as 3/17, or OFFSET", off)
		}
		partition = int32(n)
	}
	var at []int
	var where []string
	for i, l := range letters {
		if l.Offset == offset && (partition < 0 || l.Partition == partition) {
			at = append(at, i)
			where = append(where, l.Where())
		}
	}
	switch len(at) {
	case 0:
		return 0, fmt.Errorf("--offset %s: %s holds no dead letter there", off, topic)
	case 1:
		return at[0], nil
	default:
		return 0, fmt.Errorf("--offset %s: several partitions of %s have that offset (%s); give PARTITION/OFFSET", off, topic, strings.Join(where, ", "))
	}
}
