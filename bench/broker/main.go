// Command broker runs a broker for the benchmark as a process of its own,
// so that the benchmark can account its CPU apart from the relay's and
// restart it between runs: with --kind kafka (the default) franz-go's
// kfake, a Kafka-protocol broker, its log segments in files of a new
// temporary directory removed when it stops (--store files: written through
// the page cache without fsync, as Kafka does by default; under /dev/shm
// when the machine has it, so that no disk writes disturb PostgreSQL's
// fsyncs) or in kfake's in-memory files (--store memory, which grow by
// copying: on 8 KB records that copying took most of the broker's CPU);
// with --kind nats a NATS server with JetStream (nats-server,
// embedded as sinks/nats/natstest runs it), its file store in a new
// temporary directory removed when it stops. It prints its address as the
// first line of standard output once it accepts connections, host:port
// for kfake and nats://host:port for NATS, and runs until SIGINT or
// SIGTERM.
//
//	go run ./bench/broker --port 9092 --partitions 10
//	go run ./bench/broker --kind nats
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/outbox-relay/outbox-relay/sinks/nats/natstest"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "broker:", err)
		os.Exit(1)
	}
}

func run(args []string) (err error) {
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	kind := fs.String("kind", "kafka", "broker to run: kafka (kfake) or nats (NATS server with JetStream)")
	port := fs.Int("port", 0, "kafka: TCP port of 127.0.0.1 to listen on; 0 picks a free one (NATS always picks one)")
	partitions := fs.Int("partitions", 10, "kafka: partitions of each auto-created topic")
	store := fs.String("store", "files", "kafka: where kfake keeps its log segments: files (in a new temporary directory, under /dev/shm if there is one, written without fsync as Kafka does by default) or memory (kfake's in-memory files, which grow by copying)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	switch *kind {
	case "kafka":
		if *partitions < 1 {
			return fmt.Errorf("--partitions is %d; use 1 or more", *partitions)
		}
		opts := []kfake.Opt{
			kfake.NumBrokers(1),
			kfake.Ports(*port),
			kfake.AllowAutoTopicCreation(),
			kfake.DefaultNumPartitions(*partitions),
		}
		switch *store {
		case "files":
			dir, mkErr := os.MkdirTemp(segmentParent(), "bench-kfake-")
			if mkErr != nil {
				return fmt.Errorf("kfake's data directory: %w", mkErr)
			}
			defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
			opts = append(opts, kfake.DataDir(dir))
		case "memory":
		default:
			return fmt.Errorf("--store %q: use files or memory", *store)
		}
		c, err := kfake.NewCluster(opts...)
		if err != nil {
			return fmt.Errorf("start kfake on port %d: %w", *port, err)
		}
		defer c.Close()
		fmt.Println(strings.Join(c.ListenAddrs(), ","))
	case "nats":
		if *port != 0 {
			return errors.New("--port is for --kind kafka; the NATS server listens on a free port")
		}
		s, err := natstest.New(natstest.Options{})
		if err != nil {
			return fmt.Errorf("start the NATS server: %w", err)
		}
		defer func() { err = errors.Join(err, s.Close()) }()
		fmt.Println(s.URL)
	default:
		return fmt.Errorf("--kind %q: use kafka or nats", *kind)
	}
	<-ctx.Done()
	return nil
}

// segmentParent is where kfake's data directory goes: /dev/shm when it is a
// directory, else the system's temporary directory.
func segmentParent() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}
