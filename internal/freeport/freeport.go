// Package freeport picks TCP ports of 127.0.0.1 for the servers that the
// test helpers start (PostgreSQL, RabbitMQ, Redis, NATS) and may stop and
// start again on the same port.
//
// Listening on port 0 draws a port from the kernel's ephemeral range, the
// range it also gives to outgoing connections. While a server is down
// between a stop and a start, any client's connection (or a client of the
// server itself, dialling it from its own port) may take that port, and the
// start fails with "address already in use". That happened with tests
// running in parallel. Port draws from below the ephemeral range, which
// only listeners that ask for a port by number use.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
)

// rangeFile holds the kernel's ephemeral port range, "low high".
const rangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

// The ports Port draws from: from lowest up to the ephemeral range's
// start, when at least minSpan ports lie between them.
const (
	lowest  = 10000
	minSpan = 1000
	tries   = 100
)

// Port returns a port of 127.0.0.1 on which nothing listened a moment ago,
// below the ephemeral range where there is room, else from the kernel.
// Another process may still take it before the caller listens on it; a
// caller that can tell should try another.
func Port() (int, error) {
	high := ephemeralLow()
	if high-lowest < minSpan {
		return kernelPort()
	}
	for range tries {
		port := lowest + rand.IntN(high-lowest)
		if !Taken(port) {
			return port, nil
		}
	}
	return kernelPort()
}

// Ports returns n distinct ports, each as Port returns them.
func Ports(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for len(ports) < n {
		port, err := Port()
		if err != nil {
			return nil, err
		}
		if !slices.Contains(ports, port) {
			ports = append(ports, port)
		}
	}
	return ports, nil
}

// Taken reports whether port of 127.0.0.1 cannot be listened on now,
// because a socket holds it.
func Taken(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return true
	}
	ln.Close()
	return false
}

// ephemeralLow returns the start of the kernel's ephemeral port range, or
// 0 when it cannot be read (not Linux), which makes Port ask the kernel.
func ephemeralLow() int {
	b, err := os.ReadFile(rangeFile)
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return 0
	}
	low, err := strconv.Atoi(fields[0])
	if err != nil {
		return 0
	}
	return low
}

// kernelPort returns a port the kernel picks from its ephemeral range.
func kernelPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	addr, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("find a free port: listener has no TCP address")
	}
	return addr.Port, nil
}
