// Command broker runs franz-go's kfake, an in-memory Kafka-protocol broker,
// as a process of its own, so that a benchmark can account its CPU apart
// from the relay's and restart it between runs (kfake keeps every record in
// memory). It prints its listen address, host:port, as the first line of
// standard output once it accepts connections, and runs until SIGINT or
// SIGTERM.
//
//	go run ./bench/broker --port 9092 --partitions 10
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "broker:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	port := fs.Int("port", 0, "TCP port of 127.0.0.1 to listen on; 0 picks a free one")
	partitions := fs.Int("partitions", 10, "partitions of each auto-created topic")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *partitions < 1 {
		return fmt.Errorf("--partitions is %d; use 1 or more", *partitions)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(*port),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(*partitions),
	)
	if err != nil {
		return fmt.Errorf("start kfake on port %d: %w", *port, err)
	}
	defer c.Close()
	fmt.Println(strings.Join(c.ListenAddrs(), ","))
	<-ctx.Done()
	return nil
}
